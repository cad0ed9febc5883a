"""Recognising MPEG audio and AAC by their frames, for every bitrate and sample rate the standards define.

The tables here are written from ISO/IEC 11172-3 and 13818-3 independently of the module's own, so a
wrong entry there shows up as a valid frame that is not recognised."""

import pytest

import sound_bulk as sb

KBPS = {  # (version bits, layer): bitrates for indexes 1-14
    ("1", 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    ("1", 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    ("1", 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    ("2", 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    ("2", 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    ("2", 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
RATES = {"1": (44100, 48000, 32000), "2": (22050, 24000, 16000), "2.5": (11025, 12000, 8000)}
VERSION_BITS = {"1": 3, "2": 2, "2.5": 0}


def frame(version, layer, kbps_index, rate_index, padding=0):
    """One frame: its header, then zeros up to the length the standard gives."""
    kbps = KBPS[("1" if version == "1" else "2", layer)][kbps_index - 1]
    rate = RATES[version][rate_index]
    if layer == 1:
        length = (12 * kbps * 1000 // rate + padding) * 4
    else:
        length = (144 if version == "1" or layer == 2 else 72) * kbps * 1000 // rate + padding
    header = bytes([0xFF, 0xE0 | VERSION_BITS[version] << 3 | (4 - layer) << 1,  # CRC follows (bit 0 clear)
                    kbps_index << 4 | rate_index << 2 | padding << 1, 0xC0])
    return header + bytes(length - 4)


@pytest.mark.parametrize("version", ["1", "2", "2.5"])
@pytest.mark.parametrize("layer", [1, 2, 3])
def test_every_bitrate_and_sample_rate_is_mpeg_audio(version, layer):
    for rate_index in (0, 1, 2):
        for kbps_index in range(1, 15):
            for padding in (0, 1):
                first = frame(version, layer, kbps_index, rate_index, padding)
                second = frame(version, layer, kbps_index, rate_index)
                assert sb.sniff_audio(first + second) == ".mp3", (version, layer, kbps_index, rate_index)
                # a frame one byte short: no header where its length says the next one starts
                assert sb.sniff_audio(first[:-1] + second) is None, (version, layer, kbps_index, rate_index)


def adts(rate_index, length=100):
    header = bytes([0xFF, 0xF1, 0x40 | rate_index << 2, (length >> 11) & 3, (length >> 3) & 0xFF,
                    (length & 7) << 5 | 0x1F, 0xFC])
    return header + bytes(length - 7)


def test_adts_sample_rate_indexes_0_to_12_only():
    for rate_index in range(13):
        assert sb.sniff_audio(adts(rate_index) + adts(rate_index)[:7]) == ".aac", rate_index
    for rate_index in (13, 14, 15):
        assert sb.sniff_audio(adts(rate_index) + adts(rate_index)[:7]) is None, rate_index


def test_mpeg_needs_the_eleven_sync_bits():
    good = frame("1", 3, 9, 0) + frame("1", 3, 9, 0)
    assert sb.sniff_audio(good) == ".mp3"
    for byte1 in (0x1A, 0x5A, 0x9A):  # the same frames with a sync bit of the second byte cleared
        broken = bytearray(good)
        broken[1] = byte1
        broken[len(good) // 2 + 1] = byte1
        assert sb.sniff_audio(bytes(broken)) is None, hex(byte1)


def test_adts_frames_longer_than_2047_bytes():
    big = adts(4, length=3000)
    assert sb.sniff_audio(big + big[:7]) == ".aac"
    assert sb.sniff_audio(big[:-1] + big[:7] + bytes(100)) is None
