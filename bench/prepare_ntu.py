"""How fast is `prepare_ntu`, and how big is its output? Run: python bench/prepare_ntu.py [--files 2000]

The full NTU60 archive (56,578 usable files) is not available, so the 9 real sample files are linked
under new valid names (S/C/P/R/A varied, the official missing list avoided) until there are --files of
them; the time for NTU60 is extrapolated per file. The prepared size (frames.f32 + clips.npz) is compared
with the 300-frame padded float32 layout of CTR's npz files for the same clips.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from cascade_cli.data.format import open_dataset
from cascade_cli.data.ntu import SAMPLE_NAME, export_ctr_npz, missing_samples, prepare_ntu
from cascade_cli.errors import UserError

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ntu_skeleton_samples"
NTU60_FILES = 56_578


def link_replicas(raw: Path, count: int) -> None:
    samples = sorted(SAMPLES.glob("*.skeleton"))
    if not samples:
        raise UserError(f"{SAMPLES}: no .skeleton samples found")
    missing = missing_samples("ntu60")
    fields = itertools.product(range(1, 18), range(1, 4), range(1, 41), range(1, 3))  # setup, camera, performer, rep.
    made = 0
    for k, (setup, camera, performer, replication) in enumerate(fields):
        sample = samples[k % len(samples)]
        action = (int(SAMPLE_NAME.fullmatch(sample.stem)[5]) + k) % 60 + 1
        name = f"S{setup:03d}C{camera:03d}P{performer:03d}R{replication:03d}A{action:03d}"
        if name not in missing:
            (raw / f"{name}.skeleton").symlink_to(sample)
            made += 1
        if made == count:
            return
    raise UserError(f"only {made} distinct NTU60 names can be made; ask for fewer --files")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        link_replicas(raw, args.files)
        for workers in args.workers:
            out = Path(tmp) / f"prepared-{workers}"
            started = time.perf_counter()
            report = prepare_ntu(raw, out, workers=workers)
            seconds = time.perf_counter() - started
            dataset = open_dataset(out)
            frames = int(dataset.lengths.sum())
            print(f"workers {workers}: {report['prepared']} files, {frames} frames in {seconds:.1f} s = "
                  f"{report['prepared'] / seconds:.0f} files/s, {frames / seconds:.0f} frames/s; "
                  f"NTU60 ({NTU60_FILES} files) extrapolated: {NTU60_FILES / report['prepared'] * seconds / 60:.1f} min")
        prepared = sum((out / name).stat().st_size for name in ("frames.f32", "clips.npz"))
        padded = dataset.num_clips * 300 * 150 * 4
        print(f"prepared size {prepared / 2**20:.1f} MiB = {prepared / padded:.1%} of the 300-frame padded "
              f"float32 layout ({padded / 2**20:.1f} MiB)")
        started = time.perf_counter()
        export_ctr_npz(out, Path(tmp) / "npz", "ntu60")
        print(f"CTR npz export (CS + CV, {2 * padded / 2**20:.0f} MiB): {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
