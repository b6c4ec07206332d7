"""The files a design folder holds besides its structures, and how they are read back.

``flow3d protein design`` writes, as each batch of designs completes (atomically, strict JSON:
a NaN is written as ``null``):

- ``run.json``: the resolved :class:`protein.settings.DesignSettings` and the checkpoint,
  written before the first design; ``--resume`` continues only a run with the same settings;
- ``motif.json`` (with ``--motif``): the motif and, per design, how it holds it
  (:func:`protein.motif.motif_metrics`) with their mean;
- ``topology.json`` (with fold plans): per design its plan, DSSP string and how well it
  follows the plan (:meth:`protein.topology.Topology.scores`) with their mean;
- ``timings.json``: seconds per design, written last: a design is complete when its structure
  file exists and every record has its entry (:meth:`DesignRecords.complete`).

``flow3d protein eval`` reads ``timings.json``, ``motif.json`` and ``topology.json`` through
:func:`read_timings`, :func:`read_motif_summary` and :func:`read_topology_summary`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flow3d.errors import DataError
from flow3d.io import atomic_write_text
from protein.data.filters import secondary_structure
from protein.motif import Motif, motif_metrics, summarize_motif_metrics
from protein.topology import summarize_scores

__all__ = ["DesignRecords", "jsonable", "read_json", "read_motif_summary", "read_timings",
           "read_topology_summary", "write_json"]

RUN_FILE = "run.json"
TIMINGS_FILE = "timings.json"
MOTIF_FILE = "motif.json"
TOPOLOGY_FILE = "topology.json"
TIMINGS_FILES = (TIMINGS_FILE, "timings.csv")  # eval also reads a CSV (name,seconds)


def jsonable(x: Any) -> Any:
    """Plain JSON values: NaN and infinities as ``None``, numpy scalars and arrays as Python
    numbers and lists, tuples as lists."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as strict JSON (no NaN), atomically."""
    atomic_write_text(path, json.dumps(jsonable(data), indent=1, allow_nan=False) + "\n")


def read_json(path: str | Path, what: str) -> dict:
    """A JSON object from ``path``, or a one-line DataError saying it is not a ``what``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise DataError(f"{path}: not a {what} ({reason})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a {what} (a JSON {type(data).__name__}, not an object)")
    return data


# ---- per-design entries ------------------------------------------------------------------------
def motif_entry(design: Any, motif: Motif) -> dict:
    """How ``design`` holds ``motif`` (:func:`protein.motif.motif_metrics`) and where (1-based
    positions, as in the PDB file)."""
    entry = motif_metrics(design.atoms, motif, design.motif_positions)
    entry["positions"] = (np.asarray(design.motif_positions) + 1).tolist()
    return entry


def topology_entry(design: Any) -> dict:
    """``design``'s fold plan (H/E/L), where it came from, and how its DSSP (pydssp) and CAs
    follow it (:meth:`protein.topology.Topology.scores`)."""
    ss = secondary_structure(design.atoms)
    plan = design.topology
    return {"source": plan.source, "plan": plan.string, "dssp": ss,
            **plan.scores(ss, design.atoms[:, 1])}


def motif_record(motif: Motif, per: dict[str, dict]) -> dict:
    """motif.json: the motif, and per design (and on average) how the design holds it."""
    return {
        "source": motif.source,
        "segments": motif.spec,
        # 1-based, as in the PDB files (each design's own under "designs" when drawn)
        "positions": (motif.positions + 1).tolist() if motif.placed else None,
        "sequence": motif.sequence,  # the motif's residues at those positions
        "mean": summarize_motif_metrics(list(per.values())),
        "designs": per,
    }


def topology_record(per: dict[str, dict]) -> dict:
    """topology.json: every design's plan and scores, and their means."""
    return {"mean": summarize_scores(list(per.values())), "designs": per}


@dataclass
class DesignRecords:
    """The per-design entries of a design folder's records: ``timings`` always, ``motif``
    and ``topology`` when the run scaffolds a motif or follows fold plans (else ``None``)."""

    timings: dict[str, float] = field(default_factory=dict)
    motif: dict[str, dict] | None = None
    topology: dict[str, dict] | None = None

    @classmethod
    def empty(cls, motif: bool, topology: bool) -> DesignRecords:
        return cls({}, {} if motif else None, {} if topology else None)

    @classmethod
    def read(cls, folder: Path, motif: bool, topology: bool) -> DesignRecords:
        """The entries a folder already holds (missing files hold none)."""
        def designs(name: str, what: str) -> dict:
            path = folder / name
            if not path.is_file():
                return {}
            per = read_json(path, what).get("designs")
            if not isinstance(per, dict):
                raise DataError(f"{path}: not a {what} (no \"designs\" object)")
            return per

        timings = read_json(folder / TIMINGS_FILE, "timings record") \
            if (folder / TIMINGS_FILE).is_file() else {}
        return cls(dict(timings),
                   designs(MOTIF_FILE, "motif record") if motif else None,
                   designs(TOPOLOGY_FILE, "fold-plan record") if topology else None)

    def complete(self, name: str) -> bool:
        """Every record has an entry for design ``name``."""
        return name in self.timings and all(
            per is None or name in per for per in (self.motif, self.topology))

    def only(self, names: Iterable[str]) -> DesignRecords:
        """The entries of ``names`` alone."""
        keep = set(names)

        def pick(per):
            return None if per is None else {k: v for k, v in per.items() if k in keep}

        return DesignRecords(pick(self.timings), pick(self.motif), pick(self.topology))

    def add(self, design: Any, motif: Motif | None) -> None:
        self.timings[design.name] = design.seconds
        if self.motif is not None:
            self.motif[design.name] = motif_entry(design, motif)
        if self.topology is not None:
            self.topology[design.name] = topology_entry(design)

    def write(self, folder: Path, order: list[str], motif: Motif | None) -> dict:
        """Write motif.json, topology.json and then timings.json with the entries in
        ``order`` (the run's order, so means do not depend on which run made a design);
        returns the motif and topology records as written (``None`` where not kept)."""
        def ordered(per: dict) -> dict:
            return {name: per[name] for name in order if name in per}

        out = {"motif": None, "topology": None}
        if self.motif is not None:
            out["motif"] = motif_record(motif, ordered(self.motif))
            write_json(folder / MOTIF_FILE, out["motif"])
        if self.topology is not None:
            out["topology"] = topology_record(ordered(self.topology))
            write_json(folder / TOPOLOGY_FILE, out["topology"])
        write_json(folder / TIMINGS_FILE, ordered(self.timings))
        return jsonable(out)  # as written: null where a score is undefined


# ---- reading back (flow3d protein eval) ---------------------------------------------------------
def read_timings(folder: Path) -> dict[str, float]:
    """``timings.json`` ({name: seconds} or {"designs": {...}}) or ``timings.csv``
    (name,seconds); names may be file names or stems: the stem is the key used."""
    for fname in TIMINGS_FILES:
        path = folder / fname
        if not path.is_file():
            continue
        try:
            if fname.endswith(".json"):
                data = read_json(path, "timings record")
                items = data.get("designs", data).items()
            else:
                rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
                items = [(r[0], r[1]) for r in rows[1:] if len(r) >= 2]
            return {Path(str(k)).name.split(".")[0]: float(v) for k, v in items
                    if isinstance(v, int | float | str)}
        except (ValueError, AttributeError) as exc:
            raise DataError(f"{path}: cannot read timings ({exc})") from None
    return {}


def _read_summary(path: Path, names: set[str], what: str,
                  summarize: Callable[[dict, list], dict]) -> dict | None:
    """``summarize(record, per)`` of a per-design record written by ``flow3d protein
    design`` (``per``: its entries for the evaluated ``names``); None when absent."""
    if not path.is_file():
        return None
    record = read_json(path, f"{what} record written by flow3d")
    try:
        per = [d for name, d in record["designs"].items() if name in names]
        return summarize(record, per)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a {what} record written by flow3d "
                        f"({type(exc).__name__}: {exc})") from None


def read_motif_summary(folder: Path, names: set[str]) -> dict | None:
    """What ``motif.json`` recorded for the evaluated designs: the motif, and its metrics
    averaged over those designs."""
    return _read_summary(folder / MOTIF_FILE, names, "motif", lambda record, per: {
        "segments": record["segments"], "source": record["source"], "n": len(per),
        **summarize_motif_metrics(per)})


def read_topology_summary(folder: Path, names: set[str]) -> dict | None:
    """What ``topology.json`` recorded for the evaluated designs
    (:func:`protein.topology.summarize_scores`), and the number of distinct plan sources."""
    return _read_summary(folder / TOPOLOGY_FILE, names, "fold-plan", lambda record, per: {
        **summarize_scores(per), "sources": len({d["source"] for d in per})})
