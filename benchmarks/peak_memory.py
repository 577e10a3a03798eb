"""Peak RSS of ``pyro-vae train`` on full Fashion-MNIST, with the floors it stands on.

Each row is one child process; its peak resident set size is ``ru_maxrss`` from ``os.wait4`` (what
``/usr/bin/time -v`` reports as "Maximum resident set size"):

1. ``python -c "import pyro_vae"``: the imports (torch, pyro, torchvision, matplotlib);
2. the same plus Fashion-MNIST loaded as pyro_vae loads it (60,000 + 10,000 float32 images);
3. ``pyro-vae train --dataset fashion-mnist --data-dir DIR --epochs 1 --quiet --out TMP``: one epoch,
   the test ELBO, the final importance-sampled log p(x) (K = 1000, chunked) and the plots;
4. the same with ``--num-samples K`` for each K in ``--also-num-samples``: the final estimate is
   chunked, so its memory should not grow with K.

Children get ``OMP_NUM_THREADS=--threads``. On CUDA the rows measure host memory only.

    python benchmarks/peak_memory.py
    python benchmarks/peak_memory.py --also-num-samples   # the three required rows only
    python benchmarks/peak_memory.py --num-samples 10 --also-num-samples   # quick
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import data_flag, measure_child, parser, print_footer, print_header, print_table, setup


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    data_flag(p)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--num-samples", type=int, help="pass --num-samples K to the main row (default: pyro_vae's 1000)")
    p.add_argument("--also-num-samples", type=int, nargs="*", default=[10], help="extra rows with --num-samples K")
    args = p.parse_args()
    device = setup(args)
    print_header("Peak memory of pyro-vae train on Fashion-MNIST", device)
    exe = shutil.which("pyro-vae")
    cli = [exe] if exe else [sys.executable, "-c", "import sys; from pyro_vae.cli import main; sys.exit(main())"]
    load = f"import pyro_vae; pyro_vae.load_dataset('fashion-mnist', {args.data_dir!r}, 'continuous', 'cpu')"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}  # --threads reaches the children through OpenMP
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyro-vae-mem-") as tmp:

        def train(out: str, *extra: str) -> list[str]:
            cmd = [*cli, "train", "--dataset", "fashion-mnist", "--data-dir", args.data_dir]
            cmd += ["--epochs", str(args.epochs), "--quiet", "--out", str(Path(tmp) / out), "--device", args.device]
            return cmd + list(extra)

        main_k = ["--num-samples", str(args.num_samples)] if args.num_samples else []
        cases = [
            ("imports", [sys.executable, "-c", "import pyro_vae"]),
            ("imports + Fashion-MNIST tensors", [sys.executable, "-c", load]),
            (
                f"pyro-vae train, {args.epochs} epoch(s), K = {args.num_samples or '1000 (default)'}",
                train("main", *main_k),
            ),
        ]
        cases += [(f"same, --num-samples {k}", train(f"k{k}", "--num-samples", str(k))) for k in args.also_num_samples]
        for what, cmd in cases:
            print(f"  running: {' '.join(cmd)}", file=sys.stderr, flush=True)
            res = measure_child(cmd, env=env)
            if res["rc"] != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed with status {res['rc']}:\n{res['output'][-2000:]}")
            shown = " ".join(cmd).replace(tmp, "TMP").replace(sys.executable, "python")
            shown = shown.replace(exe, "pyro-vae") if exe else shown
            rows.append([what, f"`{shown}`", f"{res['peak_mib']:.0f}", f"{res['seconds']:.1f}"])
    print_table(["what", "command", "peak RSS, MiB", "wall s"], rows, "peak resident memory, one child process per row")
    print_footer()


if __name__ == "__main__":
    main()
