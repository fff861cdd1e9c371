"""Each mixer's update rule against values computed by hand from its paper's formulas on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mix_helpers import in_force, manager, stats

from dataflex.config.component.mix import DynamicMoeMixerConfig, OdmMixerConfig, StaticMixerConfig
from dataflex.train.mixer.doremi import DoReMiMixer, doremi_update
from dataflex.train.mixer.dynamic_moe import DynamicMoeMixer, dynamic_moe_update, redundancy_delta
from dataflex.train.mixer.odm import OdmMixer, exp3_policy, exploration_rate
from dataflex.train.mixer.random_mixer import RandomMixer
from dataflex.train.mixer.static_mixer import KeepMixer, StaticMixer
from dataflex.train.signals.losses import SampleLosses

NAMES3 = ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------- DoReMi
def test_doremi_weights_after_two_updates():
    # alpha0 = 1/3; step 1: softmax(log alpha0 + [.5,.1,0]) = [e^.5, e^.1, 1] / 3.75389 = [.43921, .29441,
    # .26639],
    # then 0.9 * that + 0.1/3 -> [.428616, .298299, .273084]; step 2 repeats from there with lambda [.2,.3,0].
    alpha = np.full(3, 1 / 3)
    alpha = doremi_update(alpha, [0.5, 0.1, 0.0], eta=1.0, smoothing=0.1)
    np.testing.assert_allclose(alpha, [0.4286161675, 0.2982993409, 0.2730844915], atol=1e-9)
    alpha = doremi_update(alpha, [0.2, 0.3, 0.0], eta=1.0, smoothing=0.1)
    np.testing.assert_allclose(alpha, [0.4262105135, 0.3355163116, 0.2382731749], atol=1e-9)


def _doremi_without_reference(names=NAMES3, **kwargs) -> DoReMiMixer:
    """A DoReMiMixer whose reference is replaced (the update rule needs no model)."""
    mixer = DoReMiMixer.__new__(DoReMiMixer)
    k = len(names)
    mixer.mixture_manager = manager(names=names)
    mixer.eta, mixer.smoothing = kwargs.get("eta", 1.0), kwargs.get("smoothing", 0.1)
    mixer.alpha, mixer.average_alpha = np.full(k, 1 / k), np.zeros(k)
    mixer.num_updates, mixer.excess_loss = 0, np.zeros(k)
    mixer.weights_path, mixer._is_main, mixer._domain_tokens = None, True, None
    mixer.loss_normalization, mixer._normalizer = kwargs.get("loss_normalization", "alpha_tokens"), None
    return mixer


def test_doremi_lambda_is_the_domain_token_mean_and_absent_domains_keep_theirs():
    mixer = _doremi_without_reference()
    # excess summed over a domain's tokens / its token count: [5/10, 2/20, 0/5]
    mixer.update(np.array([5.0, 2.0, 0.0]), np.array([10.0, 20.0, 5.0]))
    np.testing.assert_allclose(mixer.excess_loss, [0.5, 0.1, 0.0])
    np.testing.assert_allclose(mixer.alpha, [0.4286161675, 0.2982993409, 0.2730844915], atol=1e-9)
    # domain c absent (no tokens): its lambda stays 0.0 from the last update; a, b get 0.2, 0.3
    mixer.update(np.array([2.0, 3.0, 0.0]), np.array([10.0, 10.0, 0.0]))
    np.testing.assert_allclose(mixer.alpha, [0.4262105135, 0.3355163116, 0.2382731749], atol=1e-9)
    np.testing.assert_allclose(
        mixer.average_alpha,
        (np.array([0.4286161675, 0.2982993409, 0.2730844915]) + [0.4262105135, 0.3355163116, 0.2382731749])
        / 2,
        atol=1e-9,
    )
    assert mixer.result()["proportions"] == pytest.approx(
        list(mixer.average_alpha / mixer.average_alpha.sum())
    )


def test_doremi_excess_is_clipped_per_token_over_all_micro_batches():
    """lambda uses max(l_proxy - l_ref, 0) per token, summed over every micro-batch before dividing."""
    mixer = _doremi_without_reference(smoothing=0.0)
    ref = {0: torch.tensor([[1.0, 1.0, 0.0]]), 1: torch.tensor([[2.0, 0.5, 9.0]])}
    mixer._reference_token_loss = lambda batch, device: ref[int(batch["sample_ids"][0])]
    micro = [
        {
            "domain_ids": torch.tensor([0]),
            "sample_ids": torch.tensor([0]),
            "labels": torch.tensor([[5, 5, 5, -100]]),
        },
        {
            "domain_ids": torch.tensor([0]),
            "sample_ids": torch.tensor([1]),
            "labels": torch.tensor([[5, 5, 5, 5]]),
        },
    ]
    proxy = [torch.tensor([[3.0, 0.5, 0.0]]), torch.tensor([[2.5, 1.0, 1.0]])]  # last token of mb 0 is masked
    losses = [
        SampleLosses(token_sum=p.sum(1), token_count=torch.tensor([n]), token_loss=p)
        for p, n in zip(proxy, (2, 3))
    ]
    mixer.before_backward(losses, micro, ctx=None, update=True)
    # clipped: mb0 [2, 0] (2 tokens), mb1 [0.5, 0.5, 0] (3 tokens) -> lambda_a = 3 / 5
    np.testing.assert_allclose(mixer.excess_loss, [0.6, 0.0, 0.0])
    np.testing.assert_allclose(mixer.alpha, np.exp([0.6, 0, 0]) / np.exp([0.6, 0, 0]).sum())


class _OneRank:
    world_size = 1


def _weighted_total_on_fixed_batch(mixer):
    """alpha = (.5, .3, .2); two micro-batches, domains (0, 1) and (0, 2), token sums (4, 3) and (2, 5) over
    (2, 3) and (4, 1) tokens: the mixer's weighted loss summed over them, and the token-sum leaves."""
    mixer.alpha = np.array([0.5, 0.3, 0.2])
    micro = [{"domain_ids": torch.tensor([0, 1])}, {"domain_ids": torch.tensor([0, 2])}]
    token_sum = [torch.tensor([4.0, 3.0], requires_grad=True), torch.tensor([2.0, 5.0], requires_grad=True)]
    counts = [torch.tensor([2, 3]), torch.tensor([4, 1])]
    losses = [
        SampleLosses(token_sum=s, token_count=c, token_loss=torch.zeros(2, 4))
        for s, c in zip(token_sum, counts)
    ]
    mixer.before_backward(losses, micro, ctx=None, update=False)
    return sum(mixer.weighted_loss(lo, mb, _OneRank) for lo, mb in zip(losses, micro)), token_sum


def test_doremi_loss_is_the_alpha_weighted_per_domain_loss():
    """sum over micro-batches of weighted_loss == sum_i alpha_i * (token-mean loss of domain i in the
    batch)."""
    mixer = _doremi_without_reference(loss_normalization="domain_mean")  # the paper's form (an option)
    total, token_sum = _weighted_total_on_fixed_batch(mixer)
    # domain a: (4 + 2) / (2 + 4) = 1.0; b: 3 / 3 = 1.0; c: 5 / 1 = 5.0
    assert total.detach().item() == pytest.approx(0.5 * 1.0 + 0.3 * 1.0 + 0.2 * 5.0)
    total.backward()
    assert token_sum[0].grad.tolist() == pytest.approx([0.5 / 6, 0.3 / 3])  # the weights reach the gradient
    assert mixer.alpha.tolist() == [0.5, 0.3, 0.2]  # update=False leaves alpha alone


def test_doremi_default_loss_is_normalised_by_alpha_weighted_tokens_as_the_authors_code():
    """Issue 13 item 12: the official trainer divides sum_j alpha[d(j)] l(j) by sum_j alpha[d(j)] (masked
    tokens)."""
    mixer = _doremi_without_reference()
    assert mixer.loss_normalization == "alpha_tokens"
    total, token_sum = _weighted_total_on_fixed_batch(mixer)
    # tokens a: 2 + 4 = 6, b: 3, c: 1 -> normaliser .5*6 + .3*3 + .2*1 = 4.1; numerator .5*6 + .3*3 + .2*5 =
    # 4.9
    assert total.detach().item() == pytest.approx(4.9 / 4.1)
    total.backward()
    assert token_sum[0].grad.tolist() == pytest.approx([0.5 / 4.1, 0.3 / 4.1])
    assert token_sum[1].grad.tolist() == pytest.approx([0.5 / 4.1, 0.2 / 4.1])


# ---------------------------------------------------------------------------------------------- ODM
def test_odm_exploration_rate():
    assert exploration_rate(3, 0) == pytest.approx(1 / 3)
    assert exploration_rate(3, 3) == pytest.approx(1 / 3)  # sqrt(ln3 / 9) = 0.349 > 1/3
    assert exploration_rate(3, 4) == pytest.approx(math.sqrt(math.log(3) / 12))
    assert exploration_rate(3, 400, floor=0.2) == 0.2


def test_odm_probabilities_after_a_few_rewards():
    # alpha=0.5, reward_scale=0.5, rewards = losses [2, 1, 3]; pi uniform for 5 steps (domain c absent at step
    # 3): R_a: 0 -> 1.5 -> 2.25 -> 2.625 -> 2.8125 -> 2.90625 (each step adds 0.5 * 0.5*2/(1/3) = 1.5 after
    # halving)
    mixer = OdmMixer(manager(names=NAMES3), OdmMixerConfig(alpha=0.5, reward_scale=0.5))
    for step in range(1, 6):
        mixer.observe(stats(step, [2.0, 1.0, 3.0], present=[True, True, step != 3]))
    np.testing.assert_allclose(mixer.estimated_reward, [2.90625, 1.453125, 4.21875])
    # pi_5 = (1 - 3 eps_5) softmax(eps_4 R) + eps_5 with eps_5 = 0.27063, eps_4 = 0.30257
    pi5 = mixer.mix(None, 5)
    np.testing.assert_allclose(pi5, [0.330694693111411, 0.3093264605097137, 0.35997884637887534], atol=1e-12)
    # the next rewards are importance-weighted by pi_5, the mixture that produced that batch
    in_force(mixer.mixture_manager, pi5)
    mixer.observe(stats(6, [1.5, 0.5, 2.5]))
    np.testing.assert_allclose(
        mixer.estimated_reward, [2.5871014677556, 1.1306663060372293, 3.8455881310965747]
    )
    np.testing.assert_allclose(
        mixer.mix(None, 6), [0.3310917196033606, 0.3037152608354511, 0.3651930195611883], atol=1e-12
    )


def test_odm_cumulative_estimator_is_the_authors_code():
    """Issue 13 item 11: the released code accumulates R += (loss / 10) / pi (no smoothing)."""
    mixer = OdmMixer(manager(names=NAMES3), OdmMixerConfig(estimator="cumulative", reward_scale=0.1))
    for step in range(1, 6):
        mixer.observe(stats(step, [2.0, 1.0, 3.0]))
    # each step adds (loss / 10) / (1/3): a 0.6, b 0.3, c 0.9; five steps -> [3.0, 1.5, 4.5]
    np.testing.assert_allclose(mixer.estimated_reward, [3.0, 1.5, 4.5])
    # pi_5 = (1 - 3 eps_5) softmax(eps_4 R) + eps_5, eps_5 = sqrt(ln 3 / 15), eps_4 = sqrt(ln 3 / 12)
    np.testing.assert_allclose(
        mixer.mix(None, 5), [0.3292394863547724, 0.30785719698752306, 0.3629033166577046], atol=1e-12
    )
    smoothed = OdmMixer(manager(names=NAMES3), OdmMixerConfig(reward_scale=0.1))
    smoothed.observe(stats(1, [2.0, 1.0, 3.0]))
    np.testing.assert_allclose(smoothed.estimated_reward, [0.06, 0.03, 0.09])  # 0.1 x 0.6 (alpha 0.9)


def test_odm_min_exploration_rate_is_used():
    mixer = OdmMixer(
        manager(names=NAMES3), OdmMixerConfig(alpha=0.5, reward_scale=0.5, min_exploration_rate=0.3)
    )
    mixer.estimated_reward = np.array([2.5871014677556, 1.1306663060372293, 3.8455881310965747])
    np.testing.assert_allclose(
        mixer.mix(None, 6), [0.3322090564868511, 0.32080757539001475, 0.3469833681231342], atol=1e-12
    )


def test_odm_every_parameter_changes_the_result():
    def run(**kw):
        mixer = OdmMixer(manager(names=NAMES3), OdmMixerConfig(**kw))
        for step in range(1, 30):
            mixer.observe(stats(step, [2.0 * 0.9**step, 1.0 + 0.5 * 0.8**step, 3.0]))  # learning a and b
        return mixer.mix(None, 30)

    base = run()
    for kw in ({"alpha": 0.5}, {"reward_scale": 0.1}, {"min_exploration_rate": 0.25}):
        assert not np.allclose(run(**kw), base), kw
    progress = run(reward="learning_progress")
    assert not np.allclose(progress, base)
    for kw in ({"progress_fast": 0.5}, {"progress_slow": 0.999}):
        assert not np.allclose(run(reward="learning_progress", **kw), progress), kw


def test_odm_reward_goes_to_each_domains_own_loss():
    mixer = OdmMixer(manager(names=NAMES3), OdmMixerConfig(alpha=0.0))
    mixer.observe(stats(1, [1.0, 2.0, 4.0]))
    np.testing.assert_allclose(mixer.estimated_reward, [3.0, 6.0, 12.0])  # r_i / (1/3), alpha=0


def test_odm_learning_progress_reward_on_fixed_numbers():
    # fast beta 0.5, slow beta 0.75, alpha 0 (R = r / pi), pi uniform (1/3)
    mixer = OdmMixer(
        manager(names=NAMES3),
        OdmMixerConfig(alpha=0.0, reward="learning_progress", progress_fast=0.5, progress_slow=0.75),
    )
    mixer.observe(stats(1, [4.0, 2.0, 1.0]))  # the first loss starts both averages: no progress yet
    np.testing.assert_allclose(mixer.estimated_reward, [0.0, 0.0, 0.0])
    mixer.observe(stats(2, [2.0, 2.0, 3.0]))
    # fast = [3, 2, 2], slow = [3.5, 2, 1.5] -> progress [0.5, 0, -0.5] / 0.5 = [1, 0, -1] -> R = 3 r
    np.testing.assert_allclose(mixer.loss_fast, [3.0, 2.0, 2.0])
    np.testing.assert_allclose(mixer.loss_slow, [3.5, 2.0, 1.5])
    np.testing.assert_allclose(mixer.estimated_reward, [3.0, 0.0, -3.0])
    mixer.observe(stats(3, [2.0, 2.0, 9.0], present=[True, True, False]))
    # a: fast 2.5, slow 3.125 -> progress 0.625 = the largest among the present -> r_a = 1; c is absent: kept
    np.testing.assert_allclose(mixer.loss_fast, [2.5, 2.0, 2.0])
    np.testing.assert_allclose(mixer.loss_slow, [3.125, 2.0, 1.5])
    np.testing.assert_allclose(mixer.estimated_reward, [3.0, 0.0, -3.0])
    np.testing.assert_allclose(mixer.last_reward, [1.0, 0.0, np.nan])


def test_odm_learning_progress_starves_a_flat_loss_domain():
    """A domain whose loss never falls (noise) ends below its uniform share; with the loss reward it would
    end above it, because its loss is the highest."""

    def final_noise_weight(reward: str) -> float:
        mixer = OdmMixer(manager(names=NAMES3), OdmMixerConfig(reward=reward))
        for step in range(1, 301):
            learnable = 3.0 * np.exp(-step / 100)
            mixer.observe(stats(step, [learnable, learnable + 0.5, 3.5]))
            in_force(mixer.mixture_manager, mixer.mix(None, step))
        return float(mixer.mixture_manager.proportions[2])

    assert final_noise_weight("learning_progress") < 1 / 3 < final_noise_weight("loss")


def test_exp3_policy_is_a_distribution():
    for t in (0, 1, 10, 1000):
        pi = exp3_policy(np.array([100.0, -5.0, 3.0, 0.0]), t)
        assert pi.sum() == pytest.approx(1.0) and (pi >= exploration_rate(4, t) - 1e-12).all()


# ---------------------------------------------------------------------------------------------- dynamic_moe
LOADS = np.array([[0.5, 0.5, 0, 0], [0.25, 0.25, 0.25, 0.25], [0, 0, 0.5, 0.5]])


def test_dynamic_moe_delta_and_update():
    # pairwise L2: d(a,b) = 0.5, d(a,c) = 1, d(b,c) = 0.5 -> Delta = mean incl. self = [0.5, 1/3, 0.5]
    np.testing.assert_allclose(redundancy_delta(LOADS, "l2"), [0.5, 1 / 3, 0.5])
    # w = softmax(log [.5,.3,.2] + 2 Delta), then 0.9 w + 0.1/3
    np.testing.assert_allclose(
        dynamic_moe_update([0.5, 0.3, 0.2], [0.5, 1 / 3, 0.5], eta=2.0, smoothing=0.1),
        [0.5251584387512509, 0.2447781857482488, 0.23006337550050035],
        atol=1e-12,
    )
    # cosine distance: 1 - cos; cos(a,b) = 0.5/(0.7071*0.5) = 0.7071, cos(a,c) = 0
    cos = redundancy_delta(LOADS, "cos")
    np.testing.assert_allclose(
        cos, [(0 + (1 - 2**-0.5) + 1) / 3, 2 * (1 - 2**-0.5) / 3, (1 + (1 - 2**-0.5)) / 3]
    )


def test_dynamic_moe_mix_uses_the_proportions_in_force(monkeypatch):
    mixer = DynamicMoeMixer.__new__(DynamicMoeMixer)
    mixer.mixture_manager = manager([0.5, 0.3, 0.2], names=NAMES3)
    mixer.config = DynamicMoeMixerConfig(eta=2.0, smoothing=0.1, distance="l2")
    monkeypatch.setattr(mixer, "router_loads", lambda model: LOADS, raising=False)
    np.testing.assert_allclose(
        mixer.mix(None, 10), [0.5251584387512509, 0.2447781857482488, 0.23006337550050035], atol=1e-12
    )
    assert mixer.metrics()["dynamic_moe/delta/b"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------- simple mixers
def test_random_mixer_differs_per_update_and_reproduces():
    a, b = RandomMixer(manager(), seed=3), RandomMixer(manager(), seed=3)
    first, second = a.mix(None, 10), a.mix(None, 20)
    assert first.sum() == pytest.approx(1) and (first > 0).all()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(b.mix(None, 10), first)
    assert not np.allclose(RandomMixer(manager(), seed=4).mix(None, 10), first)


def test_static_and_keep_mixers():
    assert StaticMixer(manager()).mix(None, 1).tolist() == [0.2] * 5
    p = [0.4, 0.3, 0.1, 0.1, 0.1]
    assert StaticMixer(manager(), StaticMixerConfig(proportions=p)).mix(None, 1).tolist() == p
    assert KeepMixer(manager(p)).mix(None, 1).tolist() == p
    with pytest.raises(ValueError, match="5 domains"):
        StaticMixer(manager(), StaticMixerConfig(proportions=[0.5, 0.5]))
