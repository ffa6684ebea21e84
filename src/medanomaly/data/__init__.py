"""Datasets, real-data sources, patient-level splits and sampling."""
