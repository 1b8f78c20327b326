"""The app's workflows without the UI: t-SNE spacing and grid, inpainting display, downloads."""

import numpy as np
import torch

from ppgn_core.conditions import InpaintContext
from ppgn_core.images import to_uint8
from ppgn_core.jobs import schedule_changes
from ppgn_core.studio import grid_image, mask_outline, pick_distinct, snap_to_grid
from ppgn_core.studio.inpainting import upscale
from ppgn_core.studio.tsne import EMPTY_CELL


def test_near_copies_along_a_chain_are_left_out():
    g = np.random.default_rng(0)
    centres = g.normal(size=(3, 8)) * 10
    # 3 chains × 5 snapshots: each chain barely moves, except chain 2's last snapshot jumps far
    feats = np.concatenate([centres[c] + 0.01 * g.normal(size=(5, 8)) for c in range(3)])
    feats[14] += 30
    chain = np.repeat(np.arange(3), 5)
    keep = pick_distinct(feats, chain)
    assert keep == [0, 5, 10, 14]  # one per static chain, plus the jump


def test_grid_has_less_than_a_row_empty_and_marks_empty_cells():
    for n in (2, 5, 10, 17, 35):
        xy = np.random.default_rng(n).random((n, 2))
        cells, rows, cols = snap_to_grid(xy)
        assert len(set(cells.tolist())) == n and rows * cols >= n and rows * cols - n < cols
        canvas = grid_image(torch.zeros(n, 3, 4, 4), cells, rows, cols)
        empty = [(r, c) for r in range(rows) for c in range(cols) if r * cols + c not in set(cells.tolist())]
        for r, c in empty:
            cell = canvas[1 + r * 5: 5 + r * 5, 1 + c * 5: 5 + c * 5]
            assert (cell == EMPTY_CELL).all(-1).any() and not (cell == 255).all()


def test_inpaint_display_shows_the_mask_and_outlines_only_inside_it():
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:10, 3:12] = True
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    shown = to_uint8(InpaintContext(x, torch.from_numpy(mask).float(), start_fill="grey").hide(x))[0]  # the input panel
    assert (shown[mask] == 128).all() and np.array_equal(shown[~mask], img[~mask])
    out = mask_outline(img, mask)
    assert np.array_equal(out[~mask], img[~mask])  # nothing outside the region changes
    border = mask.copy()
    border[5:9, 4:11] = False
    assert (out[border] == (255, 214, 0)).all() and np.array_equal(out[5:9, 4:11], img[5:9, 4:11])
    big = upscale(img)
    assert big.shape == (256, 256, 3) and np.array_equal(big[::16, ::16], img)
    assert upscale(np.zeros((300, 300, 3), np.uint8)).shape == (300, 300, 3)


def test_schedule_keeps_the_first_row_and_every_change():
    rows = [{"step": t, "eps2": 1.0, "lr": 0.1} for t in range(50)]
    for t in range(20, 50):
        rows[t]["eps2"] = 0.25
    out = schedule_changes(rows)
    assert [r["step"] for r in out] == [0, 20] and out[-1]["eps2"] == 0.25
