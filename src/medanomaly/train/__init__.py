"""Training craft for classifiers: the loop and everything around it.

``loop`` (fit, early stopping, resumable checkpoints, progress bar), ``losses`` (CE, BCE, focal,
class weights), ``optim`` (Adam/AdamW/SGD, schedules), ``regularise`` (L1/L2, dropout),
``augment`` (sampled, recorded, batched MONAI warps), ``checkpoint`` (safetensors), ``tune``
(Optuna), ``cv`` (k-fold by patient), ``ensemble`` (averaging, weighted voting), ``tta``
(flip test-time augmentation). Nothing heavy is imported here.
"""
