"""Each loss on hand-made tensors whose value is worked out in the comment next to the assert."""

from __future__ import annotations

import math

import pytest
import torch

from train import losses as L

NAN = float("nan")


def test_hinge_losses() -> None:
    real = torch.tensor([2.0, 0.5])   # relu(1-2)=0, relu(1-0.5)=0.5 -> mean 0.25
    fake = torch.tensor([-2.0, 0.0])  # relu(1-2)=0, relu(1+0)=1 -> mean 0.5
    assert float(L.hinge_d_loss(real, fake)) == pytest.approx(0.75)
    assert float(L.hinge_g_loss(fake)) == pytest.approx(1.0)  # -mean(-2, 0)


def test_reconstruction_only_where_target_is_original() -> None:
    a = torch.zeros(2, 3, 2, 2)
    b = torch.ones(2, 3, 2, 2)
    b[1] = 3.0
    assert float(L.reconstruction_loss(a, b)) == pytest.approx(2.0)  # (1 + 3) / 2
    assert float(L.reconstruction_loss(a, b, torch.tensor([False, True]))) == pytest.approx(3.0)
    zero = L.reconstruction_loss(a.requires_grad_(), b, torch.tensor([False, False]))
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_perceptual_with_pluggable_extractor() -> None:
    def feats(x: torch.Tensor) -> list[torch.Tensor]:
        return [x, 2 * x]

    x = torch.zeros(1, 1, 2, 2)
    y = torch.ones(1, 1, 2, 2)
    # layer 1: |0-1| = 1, layer 2: |0-2| = 2 -> 3 ; weighted (1, 0.5) -> 1 + 1 = 2
    assert float(L.perceptual_loss(feats, x, y)) == pytest.approx(3.0)
    assert float(L.perceptual_loss(feats, x, y, [1.0, 0.5])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="layer_weights must have 2 entries, got 1"):
        L.perceptual_loss(feats, x, y, [1.0])


def test_identity_loss() -> None:
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    n = torch.tensor([[0.0, 3.0], [2.0, 0.0]])  # cos 0 -> 1 ; cos 1 -> 0 ; mean 0.5
    assert float(L.identity_loss(t, n)) == pytest.approx(0.5)


def test_landmark_loss_uses_contour_only() -> None:
    a = torch.zeros(1, 68, 2)
    b = torch.zeros(1, 68, 2)
    b[0, 17:] = 100.0           # inner points differ a lot: ignored
    b[0, 0] = torch.tensor([2.0, 0.0])  # one contour point off by 2 px in x
    # contour: 17 points x 2 coords = 34 entries, one squared error of (2/4)^2 = 0.25 -> 0.25/34
    assert float(L.landmark_loss(a, b, scale=4.0)) == pytest.approx(0.25 / 34)
    with pytest.raises(ValueError, match=r"\(B, 68, 2\)"):
        L.landmark_loss(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2))


def test_expression_and_eyebrow_losses() -> None:
    assert float(L.expression_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]))) == pytest.approx(2.5)
    names = ["jawOpen", "browDownLeft", "mouthSmileLeft", "browInnerUp"]
    ch = L.eyebrow_channels(names)
    assert ch == [1, 3]
    bo = torch.tensor([[0.9, 0.5, 0.1, 0.2]])
    bn = torch.tensor([[0.0, 0.1, 0.9, 0.4]])
    # |0.5-0.1| = 0.4, |0.2-0.4| = 0.2 -> mean 0.3 (jaw and smile channels ignored)
    assert float(L.eyebrow_loss(bo, bn, ch)) == pytest.approx(0.3)


def test_pair_loss_masks_samples_without_truth() -> None:
    n = torch.zeros(2, 3, 2, 2)
    t = torch.full((2, 3, 2, 2), 0.5)
    assert float(L.pair_loss(n, t, torch.tensor([True, False]))) == pytest.approx(0.5)


def test_normalizer_objective_weights_and_log() -> None:
    terms = {k: torch.tensor(1.0) for k in ("adv", "rec", "perc", "id", "lm", "exp", "eye")}
    total, log = L.normalizer_objective(terms)
    assert float(total) == pytest.approx(1 + 10 + 5 + 10 + 5000 + 5000 + 10)
    assert log["lm"] == 1.0 and log["total"] == pytest.approx(10036.0)
    total, _ = L.normalizer_objective({"rec": torch.tensor(2.0)}, L.NormalizerWeights(rec=3.0))
    assert float(total) == 6.0
    with pytest.raises(ValueError, match="unknown normalizer loss terms"):
        L.normalizer_objective({"bogus": torch.tensor(1.0)})


def test_classification_terms_are_masked() -> None:
    # emotion: only sample 0 labelled; logits [0, ln 3] -> p(class1) = 3/4 -> CE = -ln(3/4)
    emo_logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -5.0]])
    emo = torch.tensor([1, -1])
    assert float(L.emotion_ce(emo_logits, emo)) == pytest.approx(-math.log(0.75))
    # BCE: logit 0 vs target 1 -> ln 2 ; NaN ignored
    assert float(L.au_bce(torch.tensor([[0.0, 9.0]]), torch.tensor([[1.0, NAN]]))) == pytest.approx(math.log(2))
    # intensity: (5-0)/5 = 1 -> 1 ; (2-3)/5 -> 0.04 ; NaN ignored -> mean 0.52
    pred = torch.tensor([[5.0, 2.0, 1.0]])
    tgt = torch.tensor([[0.0, 3.0, NAN]])
    assert float(L.au_intensity_l2(pred, tgt, scale=5.0)) == pytest.approx(0.52)
    # a batch with nothing labelled gives exactly 0, not NaN
    assert float(L.au_bce(torch.zeros(2, 3), torch.full((2, 3), NAN))) == 0.0
    assert float(L.emotion_ce(torch.zeros(2, 3), torch.tensor([-1, -1]))) == 0.0


def test_classification_objective_total() -> None:
    outputs = {"emotion_logits": torch.tensor([[0.0, math.log(3.0)]]),
               "au_logits": torch.tensor([[0.0]]),
               "au_intensity": torch.tensor([[5.0]])}
    batch = {"emotion": torch.tensor([1]), "au_occurrence": torch.tensor([[1.0]]),
             "au_intensity": torch.tensor([[0.0]])}
    moe = {"importance": torch.tensor(2.0), "global": torch.tensor(3.0), "local": torch.tensor(5.0)}
    total, log = L.classification_objective(outputs, batch, moe)
    cla = -math.log(0.75) + math.log(2) + 1.0
    assert log["cla"] == pytest.approx(cla)
    assert float(total) == pytest.approx(cla + 0.001 * 2.0 + 0.001 * (3.0 + 5.0))
    assert log["moe_importance"] == 2.0


def test_pair_loss_expression_weighting_targets_the_expression_pixels() -> None:
    # A prediction that is the neutral reference everywhere: wrong only where the expression is.
    # Weighting must make that error count more than plain L1 does, and a prediction wrong by the
    # same amount elsewhere (background) must count less.
    import torch
    from train.losses import pair_loss

    ref = torch.zeros(2, 3, 16, 16)
    true_n = ref.clone()
    true_n[:, :, 10:13, 5:11] = 1.0  # "open mouth"
    neutral_pred = ref.clone()
    bg_wrong = true_n.clone()
    bg_wrong[:, :, 0:3, 0:6] += 1.0  # same number of wrong pixels, in the background
    plain = pair_loss(neutral_pred, true_n)
    weighted = pair_loss(neutral_pred, true_n, reference=ref, expression_weight=8.0)
    assert float(weighted) > 3 * float(plain)
    assert float(pair_loss(bg_wrong, true_n, reference=ref, expression_weight=8.0)) < float(
        pair_loss(bg_wrong, true_n))
    assert float(pair_loss(true_n, true_n, reference=ref, expression_weight=8.0)) == 0.0
    mask = torch.tensor([True, False])
    torch.testing.assert_close(pair_loss(neutral_pred, true_n, mask, ref, 8.0), weighted)
