"""The one mixer (`sezoo.data.mixing`): what a mixture's SNR, level, room and noise mean."""
import numpy as np
import pytest

from sezoo.data import mixing
from sezoo.data.mixing import MixSettings, NoiseBank, NoiseClip, active_level_db, mix, rms_db

from conftest import speech_like

SR = 16000


def _bank(settings=MixSettings(), synthetic=()):
    rng = np.random.default_rng(3)
    clips = [NoiseClip(f"street/{i}", "street", lambda s=i: np.random.default_rng(s).standard_normal(2 * SR).astype(np.float32))
             for i in range(2)]
    clips += [NoiseClip(f"babble/{i}", "babble", lambda x=speech_like(rng, 1.0): x) for i in range(8)]
    clips.append(NoiseClip("domestic/door", "domestic", lambda: np.hanning(800).astype(np.float32)))
    return NoiseBank(clips, SR, settings, synthetic)


def _late_room(rng):
    """A direct path at 100 samples and one reflection 100 ms later: all of it late reverberation."""
    rir = np.zeros(4000, np.float32)
    rir[100], rir[100 + int(0.1 * SR)] = 1.0, 0.5
    return rir, {"rt60_s": 0.0}


def test_dry_mixture_has_its_snr_and_level():
    speech = speech_like(np.random.default_rng(0), 2.0)
    for seed in range(6):
        m = mix(speech, np.random.default_rng(seed), _bank(), None, MixSettings(second_noise_share=0.0))
        assert active_level_db(m.target) == pytest.approx(m.meta["level_db"], abs=0.01)
        assert active_level_db(m.target) - rms_db(m.noisy - m.target) == pytest.approx(m.meta["snr_db"], abs=0.01)
        assert np.allclose(m.target / np.abs(m.target).max(), speech / np.abs(speech).max(), atol=1e-5)


def test_room_target_keeps_early_reflections_and_counts_the_tail_as_interference():
    speech = speech_like(np.random.default_rng(1), 2.0)
    settings = MixSettings(reverb_share=1.0, second_noise_share=0.0)
    m = mix(speech, np.random.default_rng(0), _bank(), _late_room, settings)
    # the direct path is aligned (no delay) and is all the early part holds
    assert np.allclose(m.target / np.abs(m.target).max(), speech / np.abs(speech).max(), atol=1e-4)
    assert m.meta["room"] == {"rt60_s": 0.0}
    # the mixture holds the late reflection on top of target and noise
    late = np.zeros_like(m.target)
    shift = int(0.1 * SR)
    late[shift:] = 0.5 * m.target[:-shift]
    noise = m.noisy - m.target - late
    heard = m.target + late
    assert active_level_db(heard) - rms_db(noise) == pytest.approx(m.meta["snr_db"], abs=0.05)


def test_early_part_ends_50_ms_after_the_direct_path_with_a_fade():
    rir = np.ones(8000, np.float32)
    rir[300] = 4.0
    early = mixing.early_part(rir, SR)
    assert len(early) == 300 + int(0.05 * SR)
    assert early[300] == 4.0 and early[-1] == pytest.approx(0.0, abs=1e-6)


def test_simulated_rooms_are_fixed_by_the_generator_and_drawn_in_range():
    a, meta = mixing.simulate_room(np.random.default_rng(7), SR)
    b, _ = mixing.simulate_room(np.random.default_rng(7), SR)
    assert np.array_equal(a, b) and np.abs(a).max() == pytest.approx(1.0)
    assert mixing.RT60_S[0] <= meta["rt60_s"] <= mixing.RT60_S[1]
    assert mixing.SOURCE_DISTANCE_M[0] - 1 <= meta["distance_m"] <= mixing.SOURCE_DISTANCE_M[1] + 1


def test_babble_sums_several_talkers_and_short_clips_are_events():
    bank = _bank()
    rng = np.random.default_rng(0)
    x, used = bank.render("babble", rng, SR)
    assert 3 <= len(used) < 7 and len(set(used)) == len(used)
    door, used = bank.render("domestic", rng, 4 * SR)
    assert used == ["domestic/door"] and (door != 0).mean() < 0.9  # silence between events


def test_second_noise_comes_from_another_category():
    bank = _bank()
    seen = 0
    for seed in range(20):
        m = mix(speech_like(np.random.default_rng(seed), 1.0), np.random.default_rng(seed), bank, None,
                MixSettings(second_noise_share=1.0))
        assert m.meta["second_noise"] != m.meta["noise"]
        seen += 1
    assert seen == 20


def test_silent_or_broken_noise_is_named():
    bank = NoiseBank([NoiseClip("street/silent.wav", "street", lambda: np.zeros(SR, np.float32))], SR, synthetic=())
    with pytest.raises(ValueError, match="street/silent.wav: empty, silent or not finite"):
        bank.render("street", np.random.default_rng(0), SR)


@pytest.mark.parametrize("kwargs, message", [
    ({"reverb_share": 1.5}, "reverb_share=1.5: a share is a probability"),
    ({"snr_db": (10.0, 0.0)}, r"snr_db=\(10.0, 0.0\): the low end is above the high end"),
    ({"level_db": (-20.0, 0.0)}, "leaves no room for noise"),
    ({"babble_talkers": (3, 3)}, "babble_talkers"),
])
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixSettings(**kwargs)


def test_reverberation_is_aligned_to_the_direct_path_and_does_not_wrap_round():
    x = np.random.default_rng(0).standard_normal(SR)
    rir = np.zeros(4000)
    rir[100], rir[1700] = 1.0, 0.5
    expected = x.copy()
    expected[1600:] += 0.5 * x[:-1600]
    assert np.allclose(mixing.reverberate(x, rir), expected, atol=1e-5)
