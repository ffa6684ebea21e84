"""Lung-nodule detection in whole chest CT volumes (the ``lung_nodule`` task).

Modules: :mod:`~medanomaly.detect.grid` (input checks, lung region, detector grid),
:mod:`~medanomaly.detect.simulate` (simulated training / held-out scans on real CT),
:mod:`~medanomaly.detect.patches` (training patches), :mod:`~medanomaly.detect.detector`
(the detector: design, training, persistence), :mod:`~medanomaly.detect.infer` (lung-restricted
sliding-window inference, findings), :mod:`~medanomaly.detect.evaluation` (FROC, agreement, real
lesions), :mod:`~medanomaly.detect.task` (train/evaluate, report) and
the lung step of ``medanomaly demo`` lives in :mod:`medanomaly.demo.lung`. Heavy libraries load on use.
"""
