"""``python -m al_sim.label <run dir>``: label the run's waiting batch in the browser.

``--import FILE`` takes labels from a Label Studio export (JSON or CSV) or a
``file,label`` CSV instead; ``--export DIR`` writes the run's labelled images
as an image-folder dataset. Every refusal is one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
from pathlib import Path

from al_sim.label.batch import Batch
from al_sim.label.rounds import current_batch
from al_sim.label.web import MAX_REQUEST_KB, LabelServer
from al_sim.runtime.errors import EXIT_USER_ERROR, ALSimError, LabelError, os_error_line
from al_sim.runtime.launcher_watch import (
    SIGTERM_REASON,
    interrupt_reason,
    interrupted_status,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m al_sim.label", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run directory of an oracle=human run")
    parser.add_argument("--import", dest="import_file", type=Path, metavar="FILE",
                        help="labels from a Label Studio JSON/CSV export or a file,label CSV")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="write the labelled images as an image-folder dataset into DIR")
    parser.add_argument("--annotator", default=None,
                        help="who labels (default: the login name)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--max-request-kb", type=int, default=MAX_REQUEST_KB, metavar="KB",
                        help="refuse request bodies larger than this (default "
                             f"{MAX_REQUEST_KB} KB; HTTP 413, never read whole)")
    parser.add_argument("--suggest", action="store_true",
                        help="show the model's suggestion (off by default: it biases experts)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = parse_args(argv)
    run_dir = args.run_dir.expanduser().resolve()
    annotator = args.annotator or getpass.getuser()
    if not run_dir.is_dir():
        raise LabelError(f"{args.run_dir} is not a directory: pass the run dir of an "
                         "oracle=human run (printed when it stopped for labels)")
    if args.export is not None:
        from al_sim.label.export import export_dataset

        n = export_dataset(run_dir, args.export)
        print(f"exported {n} labelled images to {args.export} (manifest.csv: who, which round)")
        return 0
    batch = current_batch(run_dir)
    if args.import_file is not None:
        from al_sim.label.importer import import_labels

        n = import_labels(args.import_file, batch, annotator, warn=_warn)
        left = len(batch.missing()) if batch.panel is None else _panel_left(batch, run_dir)
        print(f"imported {n} labels into round {batch.round} ({batch.dir}); "
              + (f"{left} image(s) still need a label" if left else
                 "the batch is complete: run the same python -m al_sim.run command again"))
        return 0
    if args.max_request_kb < 1:
        raise LabelError(f"--max-request-kb {args.max_request_kb}: give a size of at least 1 "
                         f"(default {MAX_REQUEST_KB})")
    if batch.panel is not None and args.annotator is not None:
        raise LabelError(f"round {batch.round} is labelled by the named annotators "
                         f"{', '.join(batch.panel.roster)} (oracle.annotators), each on their "
                         "own page: drop --annotator")
    names = [annotator] if batch.panel is None else batch.panel.roster
    server = LabelServer(batch, run_dir, names, args.host, args.port, args.suggest,
                         args.max_request_kb)
    panel = batch.panel
    if panel is None:
        print(f"label round {batch.round} ({len(batch.items)} images) at {server.url}",
              flush=True)
    for name in [] if panel is None else panel.readers:
        mine = batch.images if panel is None else panel.images_of(name, batch.images)
        print(f"label round {batch.round} as {name} ({len(mine)} images) at "
              f"{server.url_of(name)}", flush=True)
    if panel is not None and panel.adjudicator is not None:
        print(f"adjudicate round {batch.round} as {panel.adjudicator} (the flagged "
              f"images, once the readers are done) at "
              f"{server.url_of(panel.adjudicator)}", flush=True)
    print("press done on the page when finished (Ctrl-C stops; answers are saved as you go)",
          flush=True)
    server.serve_until_done()
    print("done: every image is labelled; continue with the same python -m al_sim.run command",
          flush=True)
    return 0


def _panel_left(batch: Batch, run_dir: Path) -> int:
    """Images of a panel batch still waiting for a reader's answer or a ruling."""
    from al_sim.label.panel_book import PanelBook

    _, result = PanelBook(batch, run_dir).state()
    return result.missing_images + result.waiting_rulings


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(SIGTERM_REASON)


def cli() -> None:
    """Entry point: user errors as one ``error:`` line, exit status 2; Ctrl-C or SIGTERM
    stops the page with one line (each answer is already saved, atomically)."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        sys.exit(main())
    except ALSimError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except OSError as exc:
        print(os_error_line(exc, "give a run dir or --export DIR"), file=sys.stderr,
              flush=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as exc:
        by = interrupt_reason(exc)
        print(f"stopped ({by}): the answers given so far are saved", file=sys.stderr,
              flush=True)
        sys.exit(interrupted_status(by))


if __name__ == "__main__":
    cli()
