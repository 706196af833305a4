"""Left-right mirroring of training segments (export/data/mirror.py) on a real pack face."""

from __future__ import annotations

import numpy as np
import pytest

from engine.face import CANONICAL_CENTRE_PX, MOUTH, apply_head_motion, inner_lip_gap
from export.data.mirror import MIRROR_ORDER, mirror_head, mirror_points, mirrored


def test_mirror_order_swaps_sides_and_keeps_the_midline():
    assert sorted(MIRROR_ORDER) == list(range(68))
    assert (MIRROR_ORDER[MIRROR_ORDER] == np.arange(68)).all(), "flipping twice must give the face back"
    midline = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]
    assert [int(MIRROR_ORDER[i]) for i in midline] == midline
    assert MIRROR_ORDER[0] == 16 and MIRROR_ORDER[36] == 45 and MIRROR_ORDER[48] == 54 and MIRROR_ORDER[60] == 64
    assert set(MIRROR_ORDER[MOUTH]) == set(MOUTH), "mouth points stay mouth points"


@pytest.fixture(scope="module")
def real_segment(pack_val_segments):
    return pack_val_segments[0]


def test_mirrored_face_is_a_face_seen_in_a_mirror(real_segment):
    seg = real_segment
    flip = mirrored(seg)
    assert flip.clip_id == seg.clip_id + "@mirror" and flip.audio is seg.audio, "the sound is kept as it is"
    canon = seg.canonical.astype(np.float64)
    # a point and its partner: the mirror puts the right eye's outer corner where the left one's image is
    assert flip.canonical[:, 45, 0] == pytest.approx(2 * CANONICAL_CENTRE_PX[0] - canon[:, 36, 0], abs=1e-3)
    assert flip.canonical[:, 45, 1] == pytest.approx(canon[:, 36, 1], abs=1e-3)
    # the face still faces the same way round: left eye (36) left of right eye (45), in every frame
    assert (flip.canonical[:, 36, 0] < flip.canonical[:, 45, 0]).all()
    # the lip gap, which drives the mouth losses, is the same number on the mirrored face
    assert inner_lip_gap(flip.canonical) == pytest.approx(inner_lip_gap(seg.canonical), abs=1e-3)
    assert np.allclose(mirrored(flip).canonical, seg.canonical, atol=1e-3), "mirroring twice gives the face back"
    # head motion mirrors consistently: moving then mirroring == mirroring then moving the mirror image
    moved_then_flipped = mirror_points(apply_head_motion(canon, seg.head.astype(np.float64)))
    flipped_then_moved = apply_head_motion(mirror_points(canon), mirror_head(seg.head.astype(np.float64)))
    assert np.abs(moved_then_flipped - flipped_then_moved).max() < 1e-6
    assert flip.identity == pytest.approx(mirror_points(seg.identity), abs=1e-4)
    assert flip.median_pose is None
