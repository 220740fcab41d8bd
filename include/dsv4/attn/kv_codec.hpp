// How one row of the KV cache is stored: the codecs behind config::kv_format (spec §8.2, §18.3).
//
// A cache region holds `n` rows as n payloads back to back, followed by n groups of scale bytes
// (the FlashMLA page layout: all tokens' payloads, then the scale groups). A codec says how many
// bytes each part takes for a row of `width` values whose last `rope` values are the RoPE dims,
// encodes a float row into them, and decodes it back.
//
//   f32_codec          payload = width floats                              (exact path)
//   bf16_codec         payload = width bf16                                (exact, activation precision)
//   fp8_latent_codec   payload = (width - rope) e4m3 + rope bf16, scales = one ue8m0 per 64 NoPE
//                      values, padded to 8 bytes: 448 + 128 + 8 = 584 bytes at V4's 512 = 448 + 64
//   fp4_key_codec      payload = width/2 bytes of e2m1 pairs (low nibble first), scales = one
//                      ue8m0 per 32 values: 64 + 4 = 68 bytes at c_I = 128. The row is rotated by
//                      the normalized Hadamard matrix first and the rotated values are rounded to
//                      BF16, as the reference's rotation returns them (spec §7.2, §18.3); scores
//                      stay exact in exact arithmetic when the query is rotated too (`rotated`).
//
// Scales follow the reference's quantization simulation (core/quant.hpp): FP8 per 64 values with
// amax floored at 1e-4 and s = 2^ceil(log2(amax/448)); FP4 per 32 with s = 2^ceil(log2(amax/6)).
// Decoding gives exactly the values fp8_simulate / fp4_simulate produce, so the released storage
// holds what the reference model attends to; it runs 32 values at a time through the checkpoint
// decoders of core/chunk_decode.hpp (vectorized, exact).
//
// kv_codecs<F> names the entry and index-key codec of each config::kv_format.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "dsv4/config/model_config.hpp"
#include "dsv4/core/chunk_decode.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/index_math.hpp"
#include "dsv4/core/macros.hpp"
#include "dsv4/core/quant.hpp"
#include "dsv4/core/tensor_view.hpp"

namespace dsv4::attn {

// x (n) <- H x / sqrt(n) in place, H the Sylvester Hadamard matrix (H_ij = (-1)^popcount(i & j));
// n a power of two. Orthonormal and its own inverse.
inline void hadamard_rotate(float* x, index_t n) {
  DSV4_ASSERT(n > 0 && (n & (n - 1)) == 0, "hadamard_rotate: n must be a power of two");
  for (index_t h = 1; h < n; h *= 2)
    for (index_t i = 0; i < n; i += 2 * h)
      for (index_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float s = 1.0f / std::sqrt(static_cast<float>(n));
  for (index_t i = 0; i < n; ++i) x[i] *= s;
}

struct f32_codec {
  static constexpr bool rotated = false;
  static constexpr index_t payload_bytes(index_t width, index_t) { return 4 * width; }
  static constexpr index_t scale_bytes(index_t, index_t) { return 0; }
  static void encode(const float* x, index_t width, index_t, std::byte* payload, std::byte*) {
    std::memcpy(payload, x, static_cast<std::size_t>(width) * 4);
  }
  // Returns the row as floats: the payload itself, nothing to decode.
  static const float* decode(const std::byte* payload, const std::byte*, index_t, index_t, float*) {
    return reinterpret_cast<const float*>(payload);
  }
};

struct bf16_codec {
  static constexpr bool rotated = false;
  static constexpr index_t payload_bytes(index_t width, index_t) { return 2 * width; }
  static constexpr index_t scale_bytes(index_t, index_t) { return 0; }
  static void encode(const float* x, index_t width, index_t, std::byte* payload, std::byte*) {
    for (index_t i = 0; i < width; ++i) {
      const std::uint16_t b = bf16(x[i]).bits;
      std::memcpy(payload + 2 * i, &b, 2);
    }
  }
  static const float* decode(const std::byte* payload, const std::byte*, index_t width, index_t, float* out) {
    for (index_t i = 0; i < width; ++i) {
      std::uint16_t b;
      std::memcpy(&b, payload + 2 * i, 2);
      out[i] = bf16::from_bits(b).to_float();
    }
    return out;
  }
};

struct fp8_latent_codec {
  static constexpr bool rotated = false;
  static constexpr index_t tile = 64;
  static constexpr index_t payload_bytes(index_t width, index_t rope) {
    return index_math::latent_payload_bytes(width, rope);
  }
  static constexpr index_t scale_bytes(index_t width, index_t rope) {
    return index_math::latent_scale_bytes(width, rope, tile);
  }
  static void encode(const float* x, index_t width, index_t rope, std::byte* payload, std::byte* scales) {
    const index_t nope = width - rope;
    for (index_t b = 0; b < nope; b += tile) {
      const index_t n = std::min(tile, nope - b);
      const float amax = std::max(dsv4::detail::tile_absmax(x + b, n), 1e-4f);
      const ue8m0 s = ue8m0::ceil_pow2(amax / fp8_e4m3::max_finite);
      const float inv = 1.0f / s.to_float();  // exact: a power of two
      scales[index_math::block_of(b, tile)] = static_cast<std::byte>(s.bits);
      for (index_t i = b; i < b + n; ++i) payload[i] = static_cast<std::byte>(fp8_e4m3(x[i] * inv).bits);
    }
    for (index_t k = index_math::blocks_for(nope, tile); k < scale_bytes(width, rope); ++k)
      scales[k] = std::byte{0};
    bf16_codec::encode(x + nope, rope, 0, payload + index_math::latent_rope_offset(width, rope), nullptr);
  }
  static const float* decode(const std::byte* payload, const std::byte* scales, index_t width, index_t rope,
                             float* out) {
    const index_t nope = width - rope;
    const auto* codes = reinterpret_cast<const fp8_e4m3*>(payload);
    for (index_t b = 0; b < nope; b += tile) {
      const ue8m0 s = ue8m0::from_bits(static_cast<std::uint8_t>(scales[index_math::block_of(b, tile)]));
      index_t i = b;
      for (; i + weight_chunk <= std::min(nope, b + tile); i += weight_chunk)
        decode_fp8_32(codes + i, s, out + i);
      for (; i < std::min(nope, b + tile); ++i) out[i] = codes[i].to_float() * s.to_float();
    }
    bf16_codec::decode(payload + index_math::latent_rope_offset(width, rope), nullptr, rope, 0, out + nope);
    return out;
  }
};

struct fp4_key_codec {
  static constexpr bool rotated = true;
  static constexpr index_t tile = fp4_block;
  static constexpr index_t max_width = 512;
  static constexpr index_t payload_bytes(index_t width, index_t) {
    return index_math::fp4_key_payload_bytes(width);
  }
  static constexpr index_t scale_bytes(index_t width, index_t) { return index_math::blocks_for(width, tile); }
  static void encode(const float* x, index_t width, index_t, std::byte* payload, std::byte* scales) {
    DSV4_ASSERT(width % 2 == 0 && width <= max_width, "fp4_key_codec: width must be even and <= 512");
    std::array<float, max_width> r;
    std::copy(x, x + width, r.begin());
    hadamard_rotate(r.data(), width);
    for (index_t i = 0; i < width; ++i) r[i] = round_to_bf16(r[i]);
    for (index_t b = 0; b < width; b += tile) {
      const index_t n = std::min(tile, width - b);
      const float amax =
          std::max(dsv4::detail::tile_absmax(r.data() + b, n), fp4_e2m1::max_finite * 0x1p-126f);
      const ue8m0 s = ue8m0::ceil_pow2(amax / fp4_e2m1::max_finite);
      const float inv = 1.0f / s.to_float();
      scales[index_math::block_of(b, tile)] = static_cast<std::byte>(s.bits);
      for (index_t i = b; i < b + n; i += 2)
        payload[index_math::fp4_byte(i)] =
            static_cast<std::byte>(fp4x2::pack(fp4_e2m1(r[i] * inv), fp4_e2m1(r[i + 1] * inv)).bits);
    }
  }
  static const float* decode(const std::byte* payload, const std::byte* scales, index_t width, index_t,
                             float* out) {
    const auto* pairs = reinterpret_cast<const fp4x2*>(payload);
    for (index_t b = 0; b < width; b += tile) {
      const ue8m0 s = ue8m0::from_bits(static_cast<std::uint8_t>(scales[index_math::block_of(b, tile)]));
      if (b + tile <= width) {
        decode_fp4_32(pairs + index_math::fp4_byte(b), s, out + b);
        continue;
      }
      for (index_t i = b; i < width; i += 2) {
        out[i] = pairs[index_math::fp4_byte(i)].first().to_float() * s.to_float();
        out[i + 1] = pairs[index_math::fp4_byte(i)].second().to_float() * s.to_float();
      }
    }
    return out;
  }
};

template <config::kv_format F>
struct kv_codecs;
template <>
struct kv_codecs<config::kv_format::f32> {
  using entry = f32_codec;
  using key = f32_codec;
};
template <>
struct kv_codecs<config::kv_format::bf16> {
  using entry = bf16_codec;
  using key = bf16_codec;
};
template <>
struct kv_codecs<config::kv_format::fp8_released> {
  using entry = fp8_latent_codec;
  using key = fp4_key_codec;
};

// A region of `rows` rows in codec Codec; rows are `width` values, the last `rope` of them RoPE
// dims. Contiguous (no page table): the payloads at `base`, then the scale groups. Paged: row i
// is row i mod page_rows of page pages[i / page_rows], the page_bytes bytes at base +
// pages[...] * page_bytes, each page laid out as a contiguous region of page_rows rows (the
// layout of the cache's pool, kv_cache.hpp). Kernels address rows only through payload, scales,
// read and write, so they run unchanged over either.
template <class Codec, class Byte = std::byte>
struct row_region {
  Byte* base = nullptr;
  index_t rows = 0, width = 0, rope = 0;
  const std::int32_t* pages = nullptr;  // (ceil(rows / page_rows)) page of each run of page_rows rows
  int page_shift = 0;                   // page_rows = 2^page_shift: a row's page is a shift away
  index_t page_bytes = 0;

  index_t page_rows() const { return index_t{1} << page_shift; }

  static constexpr index_t bytes_per_row(index_t width, index_t rope) {
    return Codec::payload_bytes(width, rope) + Codec::scale_bytes(width, rope);
  }
  // Bytes of a contiguous region.
  index_t bytes() const { return rows * bytes_per_row(width, rope); }
  // Row i must lie in the region and, paged, in a page the table holds (checked where asserts are
  // on: a sequence's rows past its tokens have no page).
  bool holds(index_t i) const {
    return i >= 0 && i < rows && (pages == nullptr || pages[i >> page_shift] >= 0);
  }
  Byte* payload(index_t i) const {
    DSV4_ASSERT(holds(i), "row_region: a row outside the region or in a page the table does not hold");
    const index_t pb = Codec::payload_bytes(width, rope);
    if (pages == nullptr) return base + index_math::payload_offset(i, pb);
    return base + index_math::paged_payload_offset<std::uint64_t>(i, pages, page_rows(), page_bytes, pb);
  }
  Byte* scales(index_t i) const {
    DSV4_ASSERT(holds(i), "row_region: a row outside the region or in a page the table does not hold");
    const index_t pb = Codec::payload_bytes(width, rope), sb = Codec::scale_bytes(width, rope);
    if (pages == nullptr) return base + index_math::scales_offset(i, rows, pb, sb);
    return base + index_math::paged_scales_offset<std::uint64_t>(i, pages, page_rows(), page_bytes, pb, sb);
  }
  // Row i as floats: a pointer into the payload (f32) or into buf (width floats), decoded.
  const float* read(index_t i, float* buf) const {
    return Codec::decode(payload(i), scales(i), width, rope, buf);
  }
  // Row i as floats in out (width floats), whatever the codec: decoded there, or copied.
  void read_into(index_t i, float* out) const {
    const float* row = read(i, out);
    if (row != out) std::copy(row, row + width, out);
  }
  void write(index_t i, const float* x) const requires(!std::is_const_v<Byte>) {
    Codec::encode(x, width, rope, payload(i), scales(i));
  }
  // The page holding row i as a contiguous region, and i's row in it (the region itself and i
  // when it is not paged): a loop over consecutive rows reads them a page at a time.
  std::pair<row_region, index_t> page_at(index_t i) const {
    if (pages == nullptr) return {*this, i};
    return {row_region{page(i), page_rows(), width, rope},
            static_cast<index_t>(index_math::row_in_page<std::uint64_t>(i, page_rows()))};
  }
  operator row_region<Codec, const std::byte>() const {  // NOLINT(google-explicit-constructor)
    return {base, rows, width, rope, pages, page_shift, page_bytes};
  }

 private:
  Byte* page(index_t i) const {
    const auto slot = index_math::page_slot<std::uint64_t>(i, page_rows());
    return base + index_math::page_offset<std::uint64_t>(pages[slot], page_bytes);
  }
};

// fp32 rows (n, width), contiguous, seen as a region of f32_codec rows.
inline row_region<f32_codec, const std::byte> f32_rows(tensor_view<const float, 2> rows) {
  DSV4_ASSERT(rows.is_contiguous(), "f32_rows: rows must be contiguous");
  return {reinterpret_cast<const std::byte*>(rows.data()), rows.extent(0), rows.extent(1), 0};
}

}  // namespace dsv4::attn
