"""The ``medanomaly`` command line: one command per public verb, thin over the library."""
