"""The lesson describers: every comparative word follows the numbers. Each test feeds a
describer numbers in one order and then in the other and checks the sentence (and the verdict)
changes with them, in both languages."""

from __future__ import annotations

import re

import pytest

from initlab.report.lessons import (
    augmentation,
    batch_size,
    dropout,
    exploding,
    fitting,
    l1_l2,
    learning_rate,
    naive_init,
    optimizers,
    symmetry,
    vanishing,
    xavier_variants,
)
from initlab.report.lessons.common import fixed, num, pct


def text(module, numbers, lang="en") -> str:
    return " ".join(module.describe(numbers, lang))


def verdict(module, numbers, lang="en") -> list[str]:
    return [v for _, v, _ in module.verdicts(numbers, lang)]


def ok(acc, status="ok"):
    return {"status": status, "test_acc_pct": acc, "diverged_step": None}


def test_numbers_in_portuguese_use_a_decimal_comma_and_a_thousands_point():
    assert pct(92.44, "pt-BR") == "92,4%" and pct(92.44, "en") == "92.4%"
    assert fixed(10000, "pt-BR", 0) == "10.000" and fixed(1234.5, "en") == "1,234.5"
    assert num(0.00123, "pt-BR") == "0,00123" and num(1.5e-5, "en") == "1.5e-5"


def _symmetry(zeros_acc, xavier_acc, zeros_units=1):
    return {"steps": 10, "inits": {
        "zeros": {"distinct_units": [zeros_units] * 2, "units": 8, "outcome": ok(zeros_acc),
                  "test_acc_pct": zeros_acc},
        "xavier": {"distinct_units": [8, 8], "units": 8, "outcome": ok(xavier_acc),
                   "test_acc_pct": xavier_acc}}}


def test_symmetry_names_the_better_init_and_judges_the_claim():
    a, b = _symmetry(11.0, 92.0), _symmetry(92.0, 11.0)
    assert "`xavier` reaches the highest" in text(symmetry, a)
    assert "`zeros` reaches the highest" in text(symmetry, b)
    assert "`zeros` chega à maior" in text(symmetry, b, "pt-BR")
    assert verdict(symmetry, a) == ["confirmed"] and verdict(symmetry, b) == ["qualified"]
    assert verdict(symmetry, _symmetry(92.0, 11.0, zeros_units=8)) == ["contradicted"]


def _naive(xavier_acc, naive_acc, top_peak=0.0, grad_x=0.003, grad_n=0.5):
    def cell(init, acc, sat, std, peak, grad):
        return {"activation": "sigmoid", "init": init, "depth": 5, "top_layer": "top",
                "saturated_init": [sat] * 5,
                "std_init": [std] * 5, "saturated_mean_init": sat, "std_last_init": std,
                "backprop_first_over_last": grad, "top_saturated_curve": [[0, 0.0], [20, peak]],
                "top_saturated_max": peak, "top_saturated_max_step": 20, "top_mean_last": 0.5,
                "outcome": ok(acc), "test_acc_pct": acc}
    return {"cells": {"sigmoid/uniform": cell("uniform", naive_acc, 60, 0.4, 60, grad_n),
                      "sigmoid/normal": cell("normal", naive_acc, 70, 0.45, 70, grad_n),
                      "sigmoid/xavier": cell("xavier", xavier_acc, 0.0, 0.1, top_peak, grad_x)}}


def test_naive_init_explains_a_losing_xavier_by_its_own_measurements():
    win, lose = _naive(90.0, 40.0), _naive(10.0, 40.0)
    assert "xavier trains best" in text(naive_init, win) and "Why" not in text(naive_init, win)
    losing = text(naive_init, lose)
    assert "xavier does not train best" in losing and "train worst under xavier" in losing
    assert "point to the vanishing gradient" in losing and "does not happen here" in losing
    assert "its top hidden layer (top)" in losing  # named as the run's files name it
    saturating = text(naive_init, _naive(10.0, 40.0, top_peak=95.0, grad_x=0.9))
    assert "point to the saturation" in saturating and "the saturation of Glorot" in saturating
    assert "xavier não é a que treina melhor" in text(naive_init, lose, "pt-BR")
    assert verdict(naive_init, win) == ["confirmed"] and verdict(naive_init, lose) == ["contradicted"]


def _variants(lecun_fwd, lecun_back, xav_fwd, xav_back, measured=1.0):
    def cell(arm, act, init, fwd_total, back_total, ratio):
        return {"arm": arm, "activation": act, "init": init, "widths": [8, 6, 4],
                "std": [1.0, 1.0, fwd_total ** 0.5], "backprop": [back_total ** 0.5, 1.0, 1.0],
                "forward_ratio": [ratio, ratio], "forward_predicted": [1.0, 1.0],
                "backward_ratio": [1.0], "backward_predicted": [1.0],
                "forward_total": fwd_total, "backward_total": back_total,
                "outcome": ok(90.0), "test_acc_pct": 90.0}
    cells = {"equal/linear/lecun": cell("equal", "linear", "lecun", 1.0, 1.0, measured),
             "funnel/linear/lecun": cell("funnel", "linear", "lecun", lecun_fwd, lecun_back, 1.0),
             "funnel/linear/xavier": cell("funnel", "linear", "xavier", xav_fwd, xav_back, 1.0)}
    return {"cells": cells}


def test_xavier_variants_judge_the_derivation_and_the_balance_by_the_numbers():
    balanced, lopsided = _variants(1.0, 0.05, 3.0, 0.3), _variants(1.0, 0.5, 30.0, 0.05)
    assert "it balances the two directions" in text(xavier_variants, balanced)
    assert "it does not bring the worse direction" in text(xavier_variants, lopsided)
    assert "equilibra os dois sentidos" in text(xavier_variants, balanced, "pt-BR")
    assert verdict(xavier_variants, balanced) == ["confirmed", "confirmed"]
    assert verdict(xavier_variants, lopsided)[1] == "contradicted"
    off = _variants(1.0, 0.05, 3.0, 0.3, measured=2.0)
    assert "the derivation does not hold" in text(xavier_variants, off)
    assert "the derivation holds" in text(xavier_variants, balanced)
    assert verdict(xavier_variants, off)[0] == "contradicted"


def _rates(small_acc, small_loss, large_status, large_loss):
    def rate(lr, acc, first, last, status="ok"):
        return {"lr": lr, "outcome": ok(acc, status), "test_acc_pct": acc, "status": status,
                "best_val_acc_pct": acc, "diverged_step": 3 if status == "diverged" else None,
                "loss": [[0, first], [10, last]], "first_loss": first, "last_loss": last}
    return {"rates": [0.001, 0.1, 10.0], "steps": 100, "best_lr": 0.1,
            "0.001": rate(0.001, small_acc, 2.4, small_loss),
            "0.1": rate(0.1, 92.0, 1.0, 0.3),
            "10": rate(10.0, 10.0 if large_status != "diverged" else None, 700, large_loss, large_status)}


def test_learning_rate_words_follow_the_losses():
    slow = _rates(12.0, 2.41, "stalled", 650)
    fast = _rates(91.0, 0.4, "ok", 0.35)
    assert "barely moving" in text(learning_rate, slow) and "never converges" in text(learning_rate, slow)
    assert "falling" in text(learning_rate, fast) and "still trains" in text(learning_rate, fast)
    assert "points below" in text(learning_rate, slow)
    above = _rates(95.0, 0.2, "ok", 0.35)
    assert "points above" in text(learning_rate, above)
    assert verdict(learning_rate, slow) == ["confirmed", "confirmed"]
    assert verdict(learning_rate, fast) == ["contradicted", "contradicted"]
    assert "quase parada" in text(learning_rate, slow, "pt-BR")


def _batches(cos_small, cos_big, epoch_small, epoch_big):
    return {"sizes": [1, 4096],
            "1": {"cosine_mean": cos_small, "epochs": 2, "steps_epochs": 100, "acc_epochs_pct": 50.0,
                  "subset": 8192, "acc_time_pct": 49.0, "time_steps": 90, "time_budget": 10.0,
                  "step_ms": 2.0, "epoch_s": epoch_small},
            "4096": {"cosine_mean": cos_big, "epochs": 2, "steps_epochs": 6, "acc_epochs_pct": 70.0,
                     "subset": 8192, "acc_time_pct": 91.0, "time_steps": 130, "time_budget": 10.0,
                     "step_ms": 50.0, "epoch_s": epoch_big}}


def test_batch_size_says_plainly_whether_large_batches_take_longer_per_epoch():
    real, other = _batches(0.06, 0.99, 25.0, 0.17), _batches(0.99, 0.06, 0.17, 25.0)
    assert "per epoch these numbers say the opposite" in text(batch_size, real)
    assert "per epoch these numbers say the same" in text(batch_size, other)
    assert "represent the data less well" in text(batch_size, real)
    assert "represent the data no less well" in text(batch_size, other)
    assert "dizem o contrário" in text(batch_size, real, "pt-BR")
    assert verdict(batch_size, real)[:2] == ["confirmed", "contradicted"]
    assert verdict(batch_size, other)[:2] == ["contradicted", "confirmed"]


def test_batch_size_at_full_scale_counts_an_epoch_from_the_runs_not_the_config(tmp_path):
    """lesson.scale=full leaves data.train_samples null: the epoch's steps come from the
    same-epochs run (this raised TypeError: None / batch size)."""
    from initlab.report.collect import Run

    def run(arm, result, **extra):
        config = {"lesson": {"topic": "batch_size", "scale": "full"},
                  "data": {"batch_size": 64, "train_samples": "${lesson_scale:10000,null}"},
                  "trainer": {"max_time": "00:00:00:60"},
                  "callbacks": {"grad_noise": {"num_examples": 8192}}, **extra}
        path = tmp_path / arm
        path.mkdir()
        return Run(path, config, [f"+arm/batch_size={arm}", "data.batch_size=64"], result, None)

    epochs = run("epochs", {"status": "ok", "steps": 1720, "epochs": 2, "metrics": {"test/acc": 0.9}})
    timed = run("time", {"status": "ok", "steps": 600, "metrics": {"test/acc": 0.9}})
    timed.scalars = lambda tag: [(600, 3.0)] if tag == "time/train_s" else []
    epochs.scalars = lambda tag: []
    numbers = batch_size.measure([epochs, timed])
    assert numbers["64"]["step_ms"] == pytest.approx(5.0)
    assert numbers["64"]["epoch_s"] == pytest.approx(5.0 * 860 / 1000)  # 1720 steps / 2 epochs
    alone = batch_size.measure([timed])  # no epochs run and no train_samples: no epoch time
    assert alone["64"]["epoch_s"] is None and alone["64"]["step_ms"] == pytest.approx(5.0)


def _optim(adam_early):
    def best(lr, early, late, acc=92.0, val=92.0):
        return {"lr": lr, "best_val_acc_pct": val, "outcome": ok(acc), "test_acc_pct": acc, "loss": [],
                "val": [], "ratio": [], "step_early": early, "step_late": late}
    return {"grid": {"sgd": [], "adam": []},
            "best": {"sgd": best(0.1, 9.3e-3, 4.5e-3), "adam": best(0.001, adam_early, 2.5e-3)}}


def test_optimizers_say_which_start_with_larger_steps():
    smaller, larger = _optim(6.9e-3), _optim(4e-2)
    assert "Adam does not" in text(optimizers, smaller)
    assert "Adam start with larger steps" in text(optimizers, larger)
    assert verdict(optimizers, smaller) == ["contradicted"] and verdict(optimizers, larger) == ["confirmed"]
    assert "Adam não" in text(optimizers, smaller, "pt-BR")


def test_optimizers_flag_a_best_validation_far_from_the_end():
    numbers = _optim(4e-2)
    numbers["best"]["adam"].update(best_val_acc_pct=92.0, test_acc_pct=82.5, outcome=ok(82.5))
    assert "is not where it ends" in text(optimizers, numbers)
    numbers["best"]["adam"].update(test_acc_pct=92.0, outcome=ok(92.0))
    assert "is not where it ends" not in text(optimizers, numbers)


def _vanishing(shallow, deep, bn_acc_deep):
    def cell(init, bn, r2, r20, acc20):
        return {"activation": "sigmoid", "init": init, "bn": bn, "depths": {
            "2": {"ratio": r2, "first_layer_change": 0.1, "outcome": ok(85.0), "test_acc_pct": 85.0},
            "20": {"ratio": r20, "first_layer_change": 0.0 if r20 < 1e-6 else 0.1, "outcome": ok(acc20),
                   "test_acc_pct": acc20}}}
    return {"depths": [2, 20], "steps": 150, "cells": {
        "sigmoid/standard/plain": cell("standard", False, shallow, deep, 11.0),
        "sigmoid/xavier/plain": cell("xavier", False, shallow, deep * 1e6, 11.0),
        "sigmoid/xavier/bn": cell("xavier", True, 1.0, 1.8, bn_acc_deep)}}


def test_vanishing_words_follow_depth():
    decays, grows = _vanishing(0.1, 1e-16, 87.0), _vanishing(1e-16, 0.1, 40.0)
    assert "falls from" in text(vanishing, decays) and "has not moved at all" in text(vanishing, decays)
    assert "rises from" in text(vanishing, grows)
    assert "Xavier slows the decay" in text(vanishing, decays)
    assert verdict(vanishing, decays) == ["confirmed", "confirmed", "confirmed"]
    assert verdict(vanishing, grows)[0] == "qualified" and verdict(vanishing, grows)[2] == "qualified"
    assert "cai de" in text(vanishing, decays, "pt-BR")


def _exploding(status):
    def arm(back, status="ok", acc=90.0):
        return {"layers": ["fc1", "fc2", "fc3"], "backprop": back, "growth": back[0] / back[-1],
                "gain": 2.0, "loss": [], "outcome": {**ok(acc, status), "diverged_step": 3},
                "status": status, "test_acc_pct": None if status == "diverged" else acc,
                "diverged_step": 3 if status == "diverged" else None}
    return {"depth": 3, "arms": {"too_large": arm([40.0, 6.0, 2.0], status, 10.0),
                                 "he": arm([1.0, 1.0, 1.0], acc=84.0),
                                 "clipping": arm([40.0, 6.0, 2.0], acc=70.0)}}


def test_exploding_says_whether_the_too_large_draw_diverged():
    assert "diverges at step 3" in text(exploding, _exploding("diverged"))
    assert "does not diverge" in text(exploding, _exploding("ok"))
    assert "He (gain √2) trains best" in text(exploding, _exploding("diverged"))
    assert "Clipping leaves the initial weights" in text(exploding, _exploding("diverged"))
    assert verdict(exploding, _exploding("diverged")) == ["confirmed"]
    assert verdict(exploding, _exploding("ok")) == ["qualified"]


def test_exploding_rarity_counts_both_directions():
    def lessons(ratios):
        return {"vanishing": {"cells": {"x": {"bn": False, "init": "xavier", "depths": {
            str(i): {"ratio": r} for i, r in enumerate(ratios)}}}}}
    rare = exploding.rarity(lessons([0.01, 0.02, 0.5]), "en")
    common = exploding.rarity(lessons([20.0, 30.0, 0.01]), "en")
    assert "explosion is rarer" in rare[0] and rare[1][1] == "confirmed"
    assert "explosion is not rarer" in common[0] and common[1][1] == "contradicted"
    assert "não é mais rara" in exploding.rarity(lessons([20.0, 30.0, 0.01]), "pt-BR")[0]


def _fitting(over_gap, reg_gap, reg_acc):
    def arm(train, val, acc):
        return {"train_curve": [], "val_curve": [], "step": 100, "train_acc_pct": train, "val_acc_pct": val,
                "gap": train - val, "subset": 2000, "train_samples": 1000, "outcome": ok(acc),
                "test_acc_pct": acc}
    return {"arms": {"underfit": arm(70.0, 72.0, 73.0), "overfit": arm(100.0, 100.0 - over_gap, 95.0),
                     "regularized": arm(99.0, 99.0 - reg_gap, reg_acc)}}


def test_fitting_gap_words_follow_the_gaps():
    closes, opens = _fitting(5.0, 1.0, 96.0), _fitting(1.0, 5.0, 94.0)
    assert "gap narrows from 5.0 to 1.0" in text(fitting, closes) and "rises by 1.0" in text(fitting, closes)
    assert "gap widens from 1.0 to 5.0" in text(fitting, opens) and "falls by 1.0" in text(fitting, opens)
    assert "it has not learned even the training data" in text(fitting, closes)
    assert verdict(fitting, closes) == ["confirmed", "confirmed", "confirmed"]
    assert verdict(fitting, opens)[2] == "qualified"
    assert "a diferença cai de 5,0 para 1,0" in text(fitting, closes, "pt-BR")


def _dropout(base_drop, drop_drop):
    def rate(p, gap, acc, max_drop):
        return {"p": p, "train_acc_pct": 100.0, "val_acc_pct": 100.0 - gap, "gap": gap, "outcome": ok(acc),
                "test_acc_pct": acc, "train_samples": 1000, "max_drop": max_drop, "mean_drop": 0.1,
                "top_k": 10, "top_k_drop": 3 * max_drop, "units": 256, "silent_units": 0,
                "ablation_examples": 5000, "top_drops": [max_drop]}
    return {"rates": {"0": rate(0.0, 5.0, 95.0, base_drop), "0.5": rate(0.5, 3.0, 96.0, drop_drop)}}


def test_dropout_reliance_on_one_unit_follows_the_ablation():
    less, more = _dropout(0.6, 0.1), _dropout(0.1, 0.6)
    assert "relies less on any one unit at every rate" in text(dropout, less)
    assert "relies less on one unit at 0 of 1 rates" in text(dropout, more)
    assert verdict(dropout, less)[0] == "confirmed" and verdict(dropout, more)[0] == "contradicted"
    assert "depende menos de uma unidade isolada em todas" in text(dropout, less, "pt-BR")


def _l1_l2(l1_near, l2_near):
    def cell(l1, l2, near, norm, acc):
        return {"l1": l1, "l2": l2, "near_zero": near, "weight_l2": norm, "threshold": 1e-3,
                "outcome": ok(acc), "test_acc_pct": acc}
    return {"threshold": 1e-3, "cells": {"a": cell(0.0, 0.0, 1.0, 30.0, 94.0),
                                         "b": cell(1e-3, 0.0, l1_near, 8.0, 91.0),
                                         "c": cell(0.0, 1e-3, l2_near, 22.0, 94.5)}}


def test_l1_l2_words_follow_sparsity_and_norms():
    usual, swapped = _l1_l2(87.0, 2.0), _l1_l2(2.0, 87.0)
    assert "L1 zeroes more weights than L2" in text(l1_l2, usual)
    assert "L1 does not zero more weights" in text(l1_l2, swapped)
    assert "test accuracy falls by 3.0" in text(l1_l2, usual) and "rises by 0.5" in text(l1_l2, usual)
    assert verdict(l1_l2, usual) == ["confirmed"]
    assert "a L1 zera mais pesos" in text(l1_l2, usual, "pt-BR")


def _augment(noise_top):
    def aug(clean, noise, skew):
        return {"clean_pct": clean, "outcome": ok(clean), "noise": [[0.5, noise]], "skew": [[45.0, skew]]}
    return {"levels": {"noise": [0.5], "skew": [45.0]},
            "augs": {"none": aug(97.0, 74.0, 89.0), "noise": aug(97.0, noise_top, 88.0),
                     "skew": aug(96.8, 69.0, 90.6)}}


def test_augmentation_says_whether_training_with_a_corruption_helps_against_it():
    helps, hurts = _augment(89.6), _augment(60.0)
    assert "training with noise lifts it to 89.6%" in text(augmentation, helps)
    assert "training with noise lowers it to 60.0%" in text(augmentation, hurts)
    assert verdict(augmentation, helps) == ["confirmed"] and verdict(augmentation, hurts) == ["qualified"]
    assert "treinar com ruído eleva para 89,6%" in text(augmentation, helps, "pt-BR")


ALL = [symmetry, naive_init, xavier_variants, learning_rate, batch_size, optimizers, vanishing,
       exploding, fitting, l1_l2, dropout, augmentation]
EXAMPLES = [_symmetry(11.0, 92.0), _naive(10.0, 40.0), _variants(1.0, 0.05, 3.0, 0.3),
            _rates(12.0, 2.41, "stalled", 650), _batches(0.06, 0.99, 25.0, 0.17), _optim(6.9e-3),
            _vanishing(0.1, 1e-16, 87.0), _exploding("diverged"), _fitting(5.0, 1.0, 96.0),
            _l1_l2(87.0, 2.0), _dropout(0.6, 0.1), _augment(89.6)]


@pytest.mark.parametrize("module,numbers", list(zip(ALL, EXAMPLES)),
                         ids=[m.__name__.split(".")[-1] for m in ALL])
def test_portuguese_sentences_and_tables_write_no_decimal_point(module, numbers):
    words = " ".join(module.describe(numbers, "pt-BR") + module.table(numbers, "pt-BR")
                     + [n for _, _, n in module.verdicts(numbers, "pt-BR")])
    # code spans (`...`), config-like tokens and exponents aside, no digit.digit remains
    plain = re.sub(r"`[^`]*`", "", words)
    assert not re.search(r"\d\.\d+%", plain), plain
    # a point before exactly three digits is a thousands point (8.192), any other a decimal one
    assert not re.search(r"(?<![\w=.])\d+\.(\d{1,2}|\d{4,})(?![\w.])", plain), plain
