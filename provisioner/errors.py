"""Error types shared by every stage.

The CLI maps them to exit codes: an ``InputError`` is the operator's to fix (exit 2),
an ``OperationError`` is something that failed while acting on the site (exit 1).
Messages must be safe to print: no secret material ever goes into them.
"""

from __future__ import annotations


class ProvisionerError(Exception):
    """Base of every error the tool raises on purpose."""

    exit_code = 1


class InputError(ProvisionerError):
    """Bad input or usage: the operator must change something before retrying."""

    exit_code = 2


class OperationError(ProvisionerError):
    """An operation on the site failed; a rerun may succeed once the cause is gone."""

    exit_code = 1
