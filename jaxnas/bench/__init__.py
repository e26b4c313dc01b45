"""Throughput of jaxnas, optionally side by side with the PyTorch/transformers pipeline.

  python -m jaxnas.bench                      # all cases, jaxnas only
  python -m jaxnas.bench --against=torch      # and the PyTorch reference, alternating
  python -m jaxnas.bench --cases=small,large --rounds=7

Prints one JSON line per case, each with the machine it ran on (`machine`: CPU model, cores,
AVX-512/BF16/VNNI/AMX features). Cases:
  * `small`, `large`: a fixed-shape train step (dropout 0.1, padding mask, AdamW with
    clipping) of 2 x 128 x 512 at batch 8 x 512 and 4 x 256 x 1024 at batch 32 x 256, plus
    float and served-int8 eval. Against torch, `transformers.BertForSequenceClassification`
    gets the same initial weights and the same token batches; JAX and torch rounds alternate
    and the reported ratio is the median of per-round ratios (robust to a loaded machine).
    The served int8 eval runs its dots as jaxnas picks for the machine (`int8_dot`: XLA's
    native int8 dots with VNNI or AMX, else the exact float32 emulation), is also timed with
    configs/lab2.py's activation pruning (0.5), and with each of the two dot paths forced.
  * `epoch`: one epoch of the embedded IMDb training split (its 12,500 reviews, or
    `--epoch_train_size` of them) at max_length 512, batch 8: jaxnas's `Trainer.fit` with its
    length buckets against HF Trainer with dynamic padding (`DataCollatorWithPadding`), as the
    original lab ran it. About 16 minutes here with `--against=torch`.
  * `compile`: a whole `retrain` trial of configs/default.py in a fresh process with an
    empty persistent compilation cache, then in a second fresh process with that cache (a
    rerun or resumed search); each reports compile seconds and cache hits (`trial` is one
    such run, with `--cache_dir`).
  * `search` (only when named): the default job, `python launch.py` with configs/default.py,
    from empty compilation and tokenizer caches, split into the training loops (float and
    QAT), the scoring evaluations, all compilation, and everything else; with the test
    accuracy of the model it selects (on validation), its 95% interval and sample size.

Both sides tokenize with the same jaxnas tokenizer. PyTorch is a benchmark-only dependency
(requirements-bench.txt). The bench runs with huge pages (jaxnas/hugepages.py), as launch.py
does; in one process, PyTorch gets them too. `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns
them off for both sides.

The modules: `__main__` (the command line), `shapes` (the fixed shapes, their model and
batches), `measure` (timing and what a compiled program does), `jax_side` and `torch_side`
(the two implementations), `cases` (the in-process cases) and `jobs` (the cases that time
whole trials and jobs in fresh processes).
"""
