"""The transformers releases vtfusion's code runs on, checked as soon as that code is imported.

A published checkpoint carries these files and runs them under whatever transformers its user has installed, so the
check lives here, in the code, not only in `pyproject.toml` (an install pin never reaches a remote-code user). Every
module a user can load first (the config, the model, the processor, the pipelines) imports this one before anything
from transformers, so an unsupported release fails at once with the fix instead of deep inside an import.

Tested range: `MINIMUM_TRANSFORMERS` up to the newest release on the package index, by
`tests/test_transformers_versions.py` (`make compat`).
"""

import transformers
from packaging.version import Version


MINIMUM_TRANSFORMERS = "5.20.0"


def check_transformers_version(installed: str = transformers.__version__) -> None:
    """Raise an `ImportError` naming the installed and the supported versions when transformers is too old."""
    if Version(installed) < Version(MINIMUM_TRANSFORMERS):
        raise ImportError(
            f"vtfusion needs transformers >= {MINIMUM_TRANSFORMERS} (tested from {MINIMUM_TRANSFORMERS} up to the "
            f"newest 5.x release), but transformers {installed} is installed. Upgrade it with: "
            f"pip install -U 'transformers>={MINIMUM_TRANSFORMERS}'"
        )


check_transformers_version()
