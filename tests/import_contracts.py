"""An import-linter contract type the stock ones lack: an allow-list. The in-box harness may import
only the standard library, a few named packages and itself; import-linter's `forbidden` contract
would need every other package named."""

from __future__ import annotations

import sys

import grimp
from importlinter import Contract, ContractCheck, fields, output


class OnlyImportsContract(Contract):
    """Every module in `source_modules` (packages included) imports nothing but the standard library,
    the `allowed` top-level names and modules of its own package."""

    type_name = "only_imports"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    allowed = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        allowed = set(sys.stdlib_module_names) | {str(name) for name in self.allowed}  # type: ignore[attr-defined]
        offences = []
        for source in self.source_modules:  # type: ignore[attr-defined]
            package = source.name
            for importer in sorted({package} | graph.find_descendants(package)):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    if imported == package or imported.startswith(package + "."):
                        continue
                    if imported.split(".")[0] in allowed and not imported.startswith(package.split(".")[0] + "."):
                        continue
                    offences.append({"importer": importer, "imported": imported})
        return ContractCheck(kept=not offences, metadata={"offences": offences})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for offence in check.metadata["offences"]:
            output.print_error(f"{offence['importer']} imports {offence['imported']}")
            output.new_line()
