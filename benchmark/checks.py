"""Everything checked before the first cell, in one line and exit 2 when it fails (``BadInput``):
the suite document with the command-line flags applied, validated once; what needs no torch,
RecBole or Ray (``precheck``: the suite's structure, model names, ``--ray-address``,
``--export-poisoned``, the dataset) before those load, so a refusal is quick; then the models
and what the data cannot meet (``check_against_data``)."""
from __future__ import annotations

from pathlib import Path

from benchmark.core.errors import BadInput

# suite keys a flag sets: the flag overrides the file, and a message about the key names the flag
FLAGS = {"dataset": "--dataset", "rating_threshold": "--rating-threshold", "models": "--models",
         "seeds": "--seeds", "training: epochs": "--epochs"}


def with_flags(document, args):
    """The suite document with the command-line flags applied (``FLAGS``); validated once, after."""
    if not isinstance(document, dict):
        return document          # parse_suite says what is wrong with it
    document = dict(document)
    values = {"dataset": args.dataset, "rating_threshold": args.rating_threshold, "models": args.models,
              "seeds": args.seeds}
    document.update({key: value for key, value in values.items() if value is not None})
    if args.epochs is not None:
        document["training"] = {**(document.get("training") or {}), "epochs": args.epochs}
    return document


def configure(args, document=None):
    """The suite (``document``, else the one ``args.suite`` names) with the flags applied and
    validated once, and its dataset; BadInput for anything that cannot run, before any work.
    What needs no torch, RecBole or Ray (``precheck``) is checked first, so a refusal is quick."""
    from benchmark.spec import parse_suite, read_suite
    document, where = (document, "suite document") if document is not None else read_suite(args.suite)
    document = with_flags(document, args)
    dataset = precheck(args, document, where)
    from benchmark.core.device import resolve_device
    args.device = resolve_device(args.device)
    from benchmark.core.data import make_split
    from benchmark.core.models import is_sequential, model_class
    suite = parse_suite(document, where, FLAGS)
    if args.backend == "ray" and Path(suite.dataset).exists():
        # Ray workers resolve paths in their own working directory, on their own machine
        suite.dataset = str(Path(suite.dataset).resolve())
    for name in suite.models:
        model_class(name)
    for name in suite.model_params:
        try:
            model_class(name)  # a misspelled model in model_params would be silently ignored
        except BadInput as exc:
            raise BadInput(f"model_params: {exc}") from None
    sequential = [name for name in suite.models if is_sequential(name)]
    kinds = {"leave_one_out" if suite.split == "leave_one_out" or name in sequential else "random"
             for name in suite.models}
    splits = {}
    for kind in sorted(kinds, reverse=True):   # random first: the split the data checks read
        try:
            splits[kind] = make_split(dataset, 0, kind)   # fails early on data that cannot be split
        except BadInput as exc:
            if kind == "random" or not sequential:
                raise
            raise BadInput(f"model {sequential[0]} is sequential: {exc}") from None
    check_against_data(suite, next(iter(splits.values())))
    return suite, dataset


def precheck(args, document, where: str):
    """The checks that need no heavy import (torch, RecBole, Ray), made before them so that a
    refusal takes a moment: the suite's structure, --ray-address, --export-poisoned, model names,
    and the dataset (loaded with numpy and pandas only; returned, None if the document is not
    a mapping, for ``parse_suite`` to refuse)."""
    if not isinstance(document, dict):
        return None
    from benchmark.core.device import check_device_name
    from benchmark.core.model_names import check_model_name
    from benchmark.spec import check_suite_document
    check_suite_document(document, where, FLAGS)
    check_device_name(args.device)
    check_ray_address(args)
    check_export_folder(args)
    models = document.get("models") or []
    for name in [m.strip() for m in models.split(",") if m.strip()] if isinstance(models, str) else models:
        check_model_name(name)   # an empty list or a name given twice: parse_suite says so
    for name in document.get("model_params") or {}:
        try:
            check_model_name(name)
        except BadInput as exc:
            raise BadInput(f"model_params: {exc}") from None
    from benchmark.core.data import EMBEDDED, load_dataset
    return load_dataset(str(document.get("dataset", EMBEDDED)), document.get("rating_threshold"))


RAY_SPECIAL = ("auto", "local")


def parse_ray_address(address: str) -> tuple[str, int] | None:
    """(host, port) of ``[ray://]HOST:PORT``, None for ``auto`` / ``local``; BadInput otherwise."""
    if address in RAY_SPECIAL:
        return None
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    valid_host = bool(host) and all(c.isalnum() or c in "-._:" for c in host) and \
        (":" not in host or rest.startswith("["))
    if not (valid_host and port.isdigit() and 0 < int(port) < 65536):
        raise BadInput(f"--ray-address {address!r} is not an address: write HOST:PORT (e.g. "
                       f"127.0.0.1:6379, the address 'ray start --head' prints), ray://HOST:PORT, "
                       f"{' or '.join(RAY_SPECIAL)}")
    return host, int(port)


def check_ray_address(args, wait_s: float = 3.0) -> None:
    """--ray-address: well formed, used with --backend ray, and something listening there
    (a TCP connect of at most ``wait_s`` seconds: Ray itself would wait and log for a minute)."""
    if not args.ray_address:
        return
    if args.backend != "ray":
        raise BadInput("--ray-address joins a Ray cluster: add --backend ray")
    where = parse_ray_address(args.ray_address)
    if where is None:
        return
    import socket
    try:
        socket.create_connection(where, timeout=wait_s).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise BadInput(f"--ray-address {args.ray_address}: nothing answers there ({why}): start the "
                       f"cluster (ray start --head) or pass the address it printed") from None


def check_export_folder(args) -> None:
    """--export-poisoned: a new (or, with --resume, earlier) folder this run can write; made for
    the check and removed again, so that a refusal leaves nothing behind."""
    if not args.export_poisoned:
        return
    export = Path(args.export_poisoned)
    if export.is_file() or (export.is_dir() and any(export.iterdir()) and not args.resume):
        raise BadInput(f"--export-poisoned '{export}' is a file or already holds files: choose a new "
                       f"directory (with --resume, tables made again are written over)")
    made = [p for p in [export, *export.parents] if not p.exists()]
    try:
        export.mkdir(parents=True, exist_ok=True)
        probe = export / ".write-probe.tmp"
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"cannot write to --export-poisoned '{export}' ({exc.strerror or exc}): choose a "
                       f"writable directory") from None
    finally:
        for folder in made:   # deepest first: leave no trace of the check
            try:
                folder.rmdir()
            except OSError:
                pass


def check_against_data(suite, split) -> None:
    """Settings this dataset cannot meet, refused before any work (BadInput).

    The target items must be drawable (checked on seed 0's split), and a fake profile holds each
    item at most once: ``filler_items + selected_items + targets <= items``. What depends on a
    seed's train table (rated items left for fillers, items sharing the targets' genre) is
    checked by the attack itself when it runs, and fails that cell with the attack's message.
    """
    from benchmark.core.models import size_problem
    from benchmark.core.targets import choose_targets
    for model in suite.models:
        settings = {"train_batch_size": suite.training.get("batch_size", 2048), **suite.model_params.get(model, {})}
        problem = size_problem(model, settings,
                               split.dataset.n_users, split.dataset.n_items, len(split.train))
        if problem:
            raise BadInput(problem)
    try:
        choose_targets(split.train, suite.targets["policy"], suite.targets["count"], 0)
    except ValueError as exc:
        raise BadInput(f"targets: {exc}") from None
    n_items = split.train.n_items
    for spec in suite.attacks:
        profile = {k: spec.params[k] for k in ("filler_items", "selected_items") if spec.params.get(k)}
        if profile and sum(profile.values()) + suite.targets["count"] > n_items:
            parts = " + ".join(f"{k}={v}" for k, v in profile.items())
            raise BadInput(f"attack {spec.label}: {parts} + {suite.targets['count']} targets exceeds the "
                           f"{n_items} items of {suite.dataset}: lower {', '.join(profile)}")
