"""The vendors Leadflow connects to, by the `kind` a connector names."""

from __future__ import annotations

import importlib

from services.qualifier.crm.adapter import Vendor

KINDS = ("bitrix24", "kommo", "hubspot")


def vendor(kind: str) -> Vendor:
    if kind not in KINDS:
        raise LookupError(f"no CRM vendor {kind!r}")
    module = importlib.import_module(f"services.qualifier.crm.{kind}")
    found: Vendor = module.VENDOR
    return found
