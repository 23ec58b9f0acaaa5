"""Seconds to draw one synthetic vessel mask (the retina data's generator), at DRIVE's size and smaller.

The workflow draws one mask per training and test pair, so this bounds the data rule's time.
"""

from __future__ import annotations

from common import cpu_parser, emit, parse, timed

from equireg.data.retina import DRIVE_SHAPE, generate_vessel_mask


def main() -> None:
    args = parse(cpu_parser(__doc__, repeats=5))
    shapes = [(292, 283)] if args.quick else [DRIVE_SHAPE, (292, 283)]
    emit({
        "benchmark": "vessel_masks",
        "seconds": {f"{h}x{w}": timed(lambda: generate_vessel_mask(11, shape=(h, w)), args.repeats)
                    for h, w in shapes},
    })


if __name__ == "__main__":
    main()
