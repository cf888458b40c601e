"""Fine-tune an extractive QA model.

    python train.py --cfg configs/quickstart.toml [--set optim.lr=3e-5 --set model.dropout.hidden=0.3]
    python train.py --resume runs/<name>
    python train.py --cfg x.toml --sweep optim.lr=2e-5,3e-5 --sweep model.dropout.hidden=0.1,0.3
"""
from __future__ import annotations

import argparse
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from qa_core.config import ConfigError, load_config, to_dict
from qa_core.loop import TrainingStopped, config_for_resume, run
from qa_core import sweep


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", help="TOML config (see configs/); defaults apply to anything it leaves out")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")
    sweep.add_sweep_arguments(parser)
    return parser.parse_args(argv)


@record  # under torchrun, a failing rank's traceback goes into torchrun's error summary
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.sweep:
        return sweep.main_from_args(args)  # one train.py process per combination
    try:
        if args.resume:
            # A resumed run continues with its own saved config; a different one would not be "exact".
            cfg = config_for_resume(args.resume)
            if args.overrides or (args.cfg and _differs(load_config(args.cfg), cfg)):
                raise ConfigError(f"--resume continues {args.resume} with its saved config.toml; drop --set "
                                  "(and a --cfg that differs from it), or start a new run")
        elif args.cfg is None:
            raise ConfigError("give --cfg configs/<name>.toml (e.g. configs/quickstart.toml) or --resume RUN_DIR")
        else:
            cfg = load_config(args.cfg, args.overrides)
        run(cfg, config_path=args.cfg, resume=args.resume)
    except (ConfigError, FileNotFoundError, FileExistsError, TrainingStopped) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _differs(a, b) -> bool:
    da, db = to_dict(a), to_dict(b)
    da.pop("run"), db.pop("run")
    return da != db


if __name__ == "__main__":
    sys.exit(main())
