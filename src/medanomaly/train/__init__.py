"""Training: the one loop every task trains through, and the craft around it.

``engine`` (the loop: hooks for batches, loss, optimiser and validation; step and time budget;
progress and log lines; resumable checkpoints; chance-level flag), ``batches`` (epoch-wise index
batches, step-wise samplers), ``distributed`` (``torchrun`` / DDP: gloo on CPU, NCCL on GPU),
``settings`` (the ``train:`` section: one source of defaults and limits), ``loop`` (``fit``: the
classification hooks), ``losses`` (CE, BCE, focal, class weights), ``optim`` (Adam/AdamW/SGD,
schedules), ``regularise`` (L1/L2, dropout), ``augment`` (sampled, recorded, batched MONAI warps),
``checkpoint`` (safetensors), ``tune`` (Optuna), ``cv`` (k-fold by patient), ``ensemble``
(averaging, weighted voting), ``tta`` (flip test-time augmentation). Nothing heavy is imported here.
"""
