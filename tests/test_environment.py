"""The independent references the suite compares against are installed.

Parity tests skip themselves where a reference is missing, each with the reason, so that a run without the
`[test]` extras still shows what else holds; this test makes such a run fail, so that a suite without its
references never counts as passing.
"""

import importlib.util

REFERENCES = {
    "torch": "the optimizer and schedule parity, reading .pth files",
    "transformers": "the model, feature extractor and pipeline parity",
    "kaldi_native_fbank": "the Kaldi feature parity",
    "tensorflow_datasets": "the TFDS source",
    "tensorflow": "reading TFDS data",
}


def test_the_references_the_suite_compares_against_are_installed():
    missing = [f"{name} ({why})" for name, why in REFERENCES.items() if importlib.util.find_spec(name) is None]
    assert not missing, ("missing: " + "; ".join(missing) + ". Their tests would be skipped: set up with the "
                         "README's test command (make test)")
