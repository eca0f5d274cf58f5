"""The flip check of ``cover finetune`` (:mod:`cover.downstream.flips`) on the built-in tasks' labels.

Writes the training label maps of the four built-in tasks (seed 0) into a temporary folder and
prints, per task and axis, the swapped pairs found on the first 8 cases together, the largest
ratio ``S(a, b) / max(S(a, a), S(b, b))`` of any other pair (what the threshold
:data:`cover.downstream.flips.SELF_RATIO` must stay above), and on how many single cases the
axis triggers. Deterministic (no timing); the numbers are quoted in the module docstring of
:mod:`cover.downstream.flips`.

Run ``python benchmarks/bench_flip_check.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from cover.data.demo import write_demo_task
from cover.data.demo.pseudo_subjects import write_pseudo_subjects
from cover.data.labels import read_label_map
from cover.downstream.flips import MAX_CASES, SELF_RATIO, lateral_pairs, mirror_similarity

#: Task -> (writer, classes, pairs that a left-right flip swaps).
TASKS = {
    "mni-regions-2d": (lambda f: write_pseudo_subjects(f, 24, 1, 0, "regions", 2, 96), 6, {(1, 2), (3, 4)}),
    "mni-tissue-2d": (lambda f: write_demo_task(f, size=96), 4, set()),
    "mni-regions-3d": (lambda f: write_pseudo_subjects(f, 8, 1, 0, "regions", 3), 6, {(1, 2), (3, 4)}),
    "mni-tissue-3d": (lambda f: write_pseudo_subjects(f, 8, 1, 0, "tissue", 3), 4, set()),
}


def main() -> None:
    print(f"| task | axis | swapped pairs (S; own S), first {MAX_CASES} cases | largest other ratio | single cases |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for name, (write, classes, lateral) in TASKS.items():
            folder = Path(root) / name
            write(folder)
            files = sorted((folder / "train" / "labels").iterdir())
            labels = [torch.from_numpy(read_label_map(str(f), None)) for f in files]
            dims = range(labels[0].dim())
            pooled = lateral_pairs(labels[:MAX_CASES], classes, dims)
            single = [lateral_pairs([label], classes, dims) for label in labels]
            for axis in dims:
                similarity = mirror_similarity(labels[:MAX_CASES], classes, axis)
                own = similarity.diagonal()
                ratios = [
                    float(similarity[a, b] / max(own[a], own[b]))
                    for a in range(1, classes)
                    for b in range(a + 1, classes)
                    if not (axis == 0 and lateral)  # on a lateralised axis every left/right mix pairs
                ]
                pairs = ", ".join(
                    f"{p.first}<->{p.second} ({p.similarity:.2f}; {max(p.self_similarity):.2f})" for p in pooled[axis]
                )
                other = f"{max(ratios):.2f}" if ratios else "-"
                hits = sum(bool(s[axis]) for s in single)
                print(f"| {name} | {axis} | {pairs or 'none'} | {other} | {hits}/{len(labels)} |")
    print(f"\nthreshold SELF_RATIO = {SELF_RATIO}")


if __name__ == "__main__":
    main()
