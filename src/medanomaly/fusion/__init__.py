"""Multimodal fusion: registration, paired-modality data, lesion simulation in two contrasts,
the ``fusion`` task and the fusion benchmark.

Submodules are imported where used (SimpleITK and torch are heavy):

* :mod:`medanomaly.fusion.registration`: bring modality B into modality A's grid (SimpleITK).
* :mod:`medanomaly.fusion.data`: the paired-modality manifest, geometry and modality checks.
* :mod:`medanomaly.fusion.simulate`: lesions inserted consistently into two real MRI contrasts.
* :mod:`medanomaly.fusion.training`: the small training loop with modality dropout.
* :mod:`medanomaly.fusion.infer`: predictions from whatever modalities are present, flagged.
* :mod:`medanomaly.fusion.task`: the ``fusion`` task (``medanomaly train``/``evaluate``).
* :mod:`medanomaly.fusion.benchmark`: single modality vs early/feature/decision/hybrid fusion.
"""
