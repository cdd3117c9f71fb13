"""Write a run's results: ``results.json`` (validated) and ``results.csv``. The report is built
from them by ``reports.build`` (``benchmark.run`` calls it): results never depend on reports."""
from __future__ import annotations

from pathlib import Path

from benchmark.core.atomic import finite, write_json_atomic, write_text_atomic
from benchmark.results import noise_floor
from benchmark.results.aggregate import derive, summarise, to_csv
from benchmark.results.records import SCHEMA_VERSION, validate_results


def write_results(out: Path, run_meta: dict, records: list[dict]) -> dict:
    """Derive, summarise, validate (once) and write; the document written."""
    records = derive(records)
    # JSON has no NaN: undefined values become null before the one validation
    document = finite({"schema_version": SCHEMA_VERSION, "run": run_meta, "records": records,
                       "summary": summarise(records),
                       "noise_floor": noise_floor.floor_rows(noise_floor.floor(records))})
    validate_results(document)
    write_json_atomic(out / "results.json", document)
    write_text_atomic(out / "results.csv", to_csv(records))
    return document
