"""Fine-tune an extractive QA model.

    python train.py --cfg configs/quickstart.toml [--set optim.lr=3e-5 --set model.dropout.hidden=0.3]
    python train.py --resume runs/<name>
"""
from __future__ import annotations

import argparse
import sys

from qa_core.config import ConfigError, load_config, to_dict
from qa_core.loop import TrainingStopped, config_for_resume, run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", help="TOML config (see configs/); defaults apply to anything it leaves out")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            cfg = config_for_resume(args.resume)
            if args.cfg or args.overrides:
                requested = load_config(args.cfg, args.overrides) if args.cfg else None
                if requested is not None and to_dict(requested)["run"] != to_dict(cfg)["run"]:
                    pass  # run name/output dir of the original run win
                if args.overrides or (requested is not None and _differs(requested, cfg)):
                    raise ConfigError("--resume continues the run with its own saved config.toml; "
                                      "drop --set (and --cfg if it differs), or start a new run")
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
