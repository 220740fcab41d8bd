// The safetensors file format: a bounded, validated header and zero-copy views of a memory-mapped
// file (spec §11).
//
// Layout of a file (little-endian):
//   bytes [0, 8)          N, the header length, an unsigned 64-bit integer
//   bytes [8, 8 + N)      a JSON object: {"__metadata__": {str: str}?, "<name>": {"dtype": "F32",
//                         "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
//   bytes [8 + N, size)   the data section; a tensor's bytes are [8 + N + begin, 8 + N + end)
//
// Every byte is hostile. parse_header() accepts a header only when
//   - the file holds the 8 length bytes and N <= max_header_bytes and 8 + N <= file size (compared
//     without forming 8 + N first, so N = 2^64 - 1 neither wraps nor allocates);
//   - the JSON (read by json.hpp) nests at most max_json_depth levels below the top, is an
//     object, has no repeated key, and every entry has exactly a known dtype, a shape of at most
//     max_rank non-negative extents and two offsets;
//   - elements(shape) * dtype_size == end - begin, computed with checked arithmetic;
//   - the ranges lie inside the data section, do not overlap, and cover it without holes (what
//     the reference implementation also demands, so a stray byte cannot hide anything).
// A failure is a status naming the file and, where there is one, the tensor.
//
// Dtypes: F32, BF16, F8_E4M3, F8_E8M0, I8 (also the packed FP4 experts: two E2M1 values a byte,
// the low nibble first, shape (out, in/2)), I32, I64. Any other dtype string is rejected by name.
//
// safetensors_file::open() maps the file read-only and keeps it mapped while the object (or a
// moved-to one) lives; views point into the mapping. Every failure path unmaps before it returns.
// Views are zero-copy when the stored dtype is the requested element type and the address is
// aligned for it; otherwise view() fails and the caller copies (read_as_float, checkpoint.hpp).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dsv4/core/arith.hpp"
#include "dsv4/core/dtype.hpp"
#include "dsv4/core/status.hpp"
#include "dsv4/core/tensor_view.hpp"
#include "dsv4/io/json.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define DSV4_IO_HAS_MMAP 1
#endif

namespace dsv4::io {

// ---- dtypes ---------------------------------------------------------------------------------------

enum class dtype : std::uint8_t { f32, bf16, f8_e4m3, f8_e8m0, i8, i32, i64 };

namespace detail {
struct dtype_desc {
  std::string_view name;  // the safetensors spelling
  std::int64_t size;      // bytes an element
};
inline constexpr std::array<dtype_desc, 7> dtype_table{{
    {"F32", 4},
    {"BF16", 2},
    {"F8_E4M3", 1},
    {"F8_E8M0", 1},
    {"I8", 1},
    {"I32", 4},
    {"I64", 8},
}};  // in dtype order
static_assert(dtype_table.size() == static_cast<std::size_t>(dtype::i64) + 1);
}  // namespace detail

// The safetensors spelling: "F32", "BF16", "F8_E4M3", "F8_E8M0", "I8", "I32", "I64".
constexpr std::string_view to_string(dtype t) {
  const auto i = static_cast<std::size_t>(t);
  return i < detail::dtype_table.size() ? detail::dtype_table[i].name : "?";
}

constexpr std::int64_t dtype_size(dtype t) {
  const auto i = static_cast<std::size_t>(t);
  return i < detail::dtype_table.size() ? detail::dtype_table[i].size : 0;
}

constexpr std::optional<dtype> parse_dtype(std::string_view s) {
  for (std::size_t i = 0; i < detail::dtype_table.size(); ++i)
    if (detail::dtype_table[i].name == s) return static_cast<dtype>(i);
  return std::nullopt;
}

// The stored dtype whose bytes a C++ element type aliases (fp4x2: the packed FP4 experts in I8).
template <class T>
inline constexpr std::optional<dtype> dtype_of = std::nullopt;
template <>
inline constexpr std::optional<dtype> dtype_of<float> = dtype::f32;
template <>
inline constexpr std::optional<dtype> dtype_of<bf16> = dtype::bf16;
template <>
inline constexpr std::optional<dtype> dtype_of<fp8_e4m3> = dtype::f8_e4m3;
template <>
inline constexpr std::optional<dtype> dtype_of<ue8m0> = dtype::f8_e8m0;
template <>
inline constexpr std::optional<dtype> dtype_of<fp4x2> = dtype::i8;
template <>
inline constexpr std::optional<dtype> dtype_of<std::int8_t> = dtype::i8;
template <>
inline constexpr std::optional<dtype> dtype_of<std::int32_t> = dtype::i32;
template <>
inline constexpr std::optional<dtype> dtype_of<std::int64_t> = dtype::i64;

// ---- limits -----------------------------------------------------------------------------------------

inline constexpr std::uint64_t max_header_bytes = std::uint64_t{100} << 20;  // the reference's bound
// Nesting levels below the top object; a valid header has 2 ({ name: { shape: [ ] } }).
inline constexpr int max_json_depth = 8;
inline constexpr std::size_t max_rank = 8;

// "(4096, 1024)"
inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + ")";
}

// ---- the header -------------------------------------------------------------------------------------

struct tensor_info {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::int64_t> shape;
  std::int64_t begin = 0;  // byte offsets inside the data section, [begin, end)
  std::int64_t end = 0;

  [[nodiscard]] std::int64_t byte_size() const { return end - begin; }
  // Elements as stored (for I8-packed FP4 that is bytes, half the logical weights).
  [[nodiscard]] std::int64_t elements() const {
    std::int64_t n = 1;
    for (std::int64_t e : shape) n *= e;  // validated by parse_header not to overflow
    return n;
  }
};

struct header {
  std::uint64_t json_bytes = 0;      // N
  std::int64_t data_offset = 0;      // 8 + N
  std::int64_t data_bytes = 0;       // file size - data_offset
  std::vector<tensor_info> tensors;  // sorted by name
  std::map<std::string, std::string, std::less<>> metadata;
};

namespace detail {

inline status header_error(std::string_view file, std::string_view what) {
  return {errc::io_error, std::string(file) + ": " + std::string(what)};
}
inline status tensor_error(std::string_view file, std::string_view tensor, std::string_view what) {
  return {errc::io_error, std::string(file) + ": tensor " + std::string(tensor) + ": " + std::string(what)};
}

// A JSON number that is a non-negative integer fitting in int64 (floats, negatives, booleans and
// 2^64 - 1 are all rejected).
inline std::optional<std::int64_t> json_index(const nlohmann::json& j) {
  if (j.is_number_unsigned()) {
    const auto v = j.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<std::int64_t>(v);
  }
  if (j.is_number_integer()) {
    const auto v = j.get<std::int64_t>();
    if (v < 0) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

// Parses JSON text that is untrusted (json.hpp): at most max_json_depth levels below the top
// value, no repeated key, nothing thrown; a problem is reported with the file's name.
inline result<nlohmann::json> parse_untrusted_json(std::string_view text, std::string_view file) {
  auto j = parse_json(text, max_json_depth);
  if (!j) return header_error(file, j.error().message());
  return j;
}

inline status parse_entry(const std::string& name, const nlohmann::json& v, std::string_view file,
                          tensor_info& out) {
  if (!v.is_object()) return tensor_error(file, name, "entry is not an object");
  for (const auto& [key, value] : v.items()) {
    (void)value;
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      return tensor_error(file, name, "unknown field \"" + key + "\"");
  }
  const auto dt = v.find("dtype");
  const auto sh = v.find("shape");
  const auto off = v.find("data_offsets");
  if (dt == v.end() || sh == v.end() || off == v.end())
    return tensor_error(file, name, "needs dtype, shape and data_offsets");
  if (!dt->is_string()) return tensor_error(file, name, "dtype is not a string");
  const auto& dts = dt->get_ref<const std::string&>();
  const auto type = parse_dtype(dts);
  if (!type)
    return tensor_error(
        file, name, "unsupported dtype \"" + dts + "\" (known: F32, BF16, F8_E4M3, F8_E8M0, I8, I32, I64)");
  if (!sh->is_array() || sh->size() > max_rank)
    return tensor_error(file, name,
                        "shape is not an array of at most " + std::to_string(max_rank) + " extents");
  out.name = name;
  out.type = *type;
  out.shape.clear();
  std::int64_t bytes = dtype_size(*type);
  for (const auto& e : *sh) {
    const auto x = json_index(e);
    if (!x) return tensor_error(file, name, "shape holds something other than a non-negative integer");
    out.shape.push_back(*x);
    if (!checked_mul(bytes, *x, bytes)) return tensor_error(file, name, "shape overflows 64-bit byte counts");
  }
  if (!off->is_array() || off->size() != 2)
    return tensor_error(file, name, "data_offsets is not [begin, end]");
  const auto b = json_index((*off)[0]), e = json_index((*off)[1]);
  if (!b || !e || *b > *e) return tensor_error(file, name, "data_offsets is not 0 <= begin <= end < 2^63");
  out.begin = *b;
  out.end = *e;
  if (*e - *b != bytes)
    return tensor_error(file, name,
                        std::string(to_string(*type)) + " " + shape_string(out.shape) + " needs " +
                            std::to_string(bytes) + " bytes, data_offsets [" + std::to_string(*b) + ", " +
                            std::to_string(*e) + ") hold " + std::to_string(*e - *b));
  return {};
}

}  // namespace detail

// Parses and validates the header of the safetensors file whose bytes are `file` (the whole
// file). `file_name` only labels messages.
inline result<header> parse_header(std::span<const std::byte> file, std::string_view file_name) {
  if (file.size() < 8)
    return detail::header_error(file_name, "truncated: " + std::to_string(file.size()) +
                                               " bytes, shorter than the 8-byte header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | std::to_integer<std::uint64_t>(file[static_cast<std::size_t>(i)]);
  if (n > max_header_bytes)
    return detail::header_error(file_name, "header length " + std::to_string(n) + " exceeds the limit of " +
                                               std::to_string(max_header_bytes) + " bytes");
  if (n > file.size() - 8)
    return detail::header_error(file_name, "header length " + std::to_string(n) +
                                               " runs past the end of the " + std::to_string(file.size()) +
                                               "-byte file");
  header h;
  h.json_bytes = n;
  h.data_offset = static_cast<std::int64_t>(8 + n);
  h.data_bytes = static_cast<std::int64_t>(file.size() - 8 - n);
  const std::string_view text(reinterpret_cast<const char*>(file.data()) + 8, static_cast<std::size_t>(n));
  try {
    auto parsed = detail::parse_untrusted_json(text, file_name);
    if (!parsed) return parsed.error();
    const nlohmann::json& j = *parsed;
    if (!j.is_object()) return detail::header_error(file_name, "header is not a JSON object");
    for (const auto& [key, value] : j.items()) {
      if (key == "__metadata__") {
        if (!value.is_object()) return detail::header_error(file_name, "__metadata__ is not an object");
        for (const auto& [mk, mv] : value.items()) {
          if (!mv.is_string())
            return detail::header_error(file_name, "__metadata__ value of \"" + mk + "\" is not a string");
          h.metadata.emplace(mk, mv.get<std::string>());
        }
        continue;
      }
      tensor_info t;
      DSV4_TRY(detail::parse_entry(key, value, file_name, t));
      if (t.end > h.data_bytes)
        return detail::tensor_error(file_name, key,
                                    "data_offsets [" + std::to_string(t.begin) + ", " +
                                        std::to_string(t.end) + ") run past the " +
                                        std::to_string(h.data_bytes) + "-byte data section");
      h.tensors.push_back(std::move(t));
    }
    // Overlaps and holes: walk the ranges in file order.
    std::vector<const tensor_info*> order;
    order.reserve(h.tensors.size());
    for (const auto& t : h.tensors) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const tensor_info* a, const tensor_info* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::int64_t covered = 0;
    const tensor_info* prev = nullptr;
    for (const tensor_info* t : order) {
      if (t->begin < covered)
        return detail::tensor_error(file_name, t->name,
                                    "data_offsets [" + std::to_string(t->begin) + ", " +
                                        std::to_string(t->end) + ") overlap those of " + prev->name);
      if (t->begin > covered)
        return detail::tensor_error(file_name, t->name,
                                    "data_offsets begin at " + std::to_string(t->begin) +
                                        ", leaving bytes [" + std::to_string(covered) + ", " +
                                        std::to_string(t->begin) + ") of the data section unused");
      covered = t->end;
      prev = t;
    }
    if (covered != h.data_bytes)
      return detail::header_error(file_name, "the data section has " + std::to_string(h.data_bytes) +
                                                 " bytes, the tensors use " + std::to_string(covered));
    std::sort(h.tensors.begin(), h.tensors.end(),
              [](const tensor_info& a, const tensor_info& b) { return a.name < b.name; });
    return h;
  } catch (const std::exception& e) {  // std::bad_alloc, or a json accessor on an unexpected type
    return detail::header_error(file_name, std::string("cannot read the header: ") + e.what());
  }
}

// ---- typed views of raw bytes --------------------------------------------------------------------------

// A zero-copy view of `bytes` holding a stored tensor (type, shape) as tensor_view<const T, Rank>.
// Fails, naming `what`, when T does not alias the stored dtype, the rank differs, or the address is
// not aligned for T.
template <class T, std::size_t Rank>
result<tensor_view<const T, Rank>> typed_view(std::span<const std::byte> bytes, dtype type,
                                              std::span<const std::int64_t> shape, std::string_view what) {
  static_assert(dtype_of<T>.has_value(), "typed_view: T has no safetensors dtype");
  if (*dtype_of<T> != type)
    return status{errc::invalid_argument, std::string(what) + ": stored as " + std::string(to_string(type)) +
                                              ", requested as " + std::string(to_string(*dtype_of<T>))};
  if (shape.size() != Rank)
    return status{errc::shape_mismatch, std::string(what) + ": has rank " + std::to_string(shape.size()) +
                                            " " + shape_string(shape) + ", requested rank " +
                                            std::to_string(Rank)};
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(T) != 0)
    return status{errc::unsupported, std::string(what) + ": stored at an address not aligned for " +
                                         std::string(to_string(type)) + "; copy it instead (read_as_float)"};
  extents_t<Rank> e{};
  for (std::size_t i = 0; i < Rank; ++i) e[i] = shape[i];
  return tensor_view<const T, Rank>(reinterpret_cast<const T*>(bytes.data()), e);
}

// ---- a read-only memory mapping -------------------------------------------------------------------------

class mapped_file {
 public:
  mapped_file() = default;
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      unmap();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~mapped_file() { unmap(); }

  // Maps the whole regular file read-only. An empty file maps to an empty span.
  static result<mapped_file> open(const std::filesystem::path& path) {
#if defined(DSV4_IO_HAS_MMAP)
    const std::string p = path.string();
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return status{errc::io_error, p + ": cannot open: " + std::strerror(errno)};
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return status{errc::io_error, p + ": not a regular file"};
    }
    mapped_file m;
    if (st.st_size > 0) {
      void* addr = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
      if (addr == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        return status{errc::io_error, p + ": cannot map: " + std::strerror(err)};
      }
      m.data_ = static_cast<const std::byte*>(addr);
      m.size_ = static_cast<std::size_t>(st.st_size);
    }
    ::close(fd);  // the mapping keeps the file
    return m;
#else
    return status{errc::unsupported, path.string() + ": memory-mapped files need a POSIX system"};
#endif
  }

  [[nodiscard]] std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  void unmap() noexcept {
#if defined(DSV4_IO_HAS_MMAP)
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
#endif
    data_ = nullptr;
    size_ = 0;
  }
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// ---- one safetensors file -------------------------------------------------------------------------------

class safetensors_file {
 public:
  // Maps and validates `path`; nothing stays mapped when it fails.
  static result<safetensors_file> open(const std::filesystem::path& path) {
    auto m = mapped_file::open(path);
    if (!m) return m.error();
    safetensors_file f;
    f.name_ = path.string();
    f.map_ = std::move(*m);
    f.bytes_ = f.map_.bytes();
    auto h = parse_header(f.bytes_, f.name_);
    if (!h) return h.error();  // f (and its mapping) is destroyed here
    f.header_ = std::move(*h);
    return f;
  }

  // Validates bytes the caller owns and keeps alive (a file read into memory, a fuzz input).
  static result<safetensors_file> from_bytes(std::span<const std::byte> bytes, std::string name) {
    safetensors_file f;
    f.name_ = std::move(name);
    f.bytes_ = bytes;
    auto h = parse_header(f.bytes_, f.name_);
    if (!h) return h.error();
    f.header_ = std::move(*h);
    return f;
  }

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] const header& info() const { return header_; }
  [[nodiscard]] std::span<const tensor_info> tensors() const { return header_.tensors; }
  [[nodiscard]] const std::map<std::string, std::string, std::less<>>& metadata() const {
    return header_.metadata;
  }

  // The tensor stored under `name` exactly, or nullptr.
  [[nodiscard]] const tensor_info* find(std::string_view name) const {
    const auto it = std::lower_bound(header_.tensors.begin(), header_.tensors.end(), name,
                                     [](const tensor_info& t, std::string_view n) { return t.name < n; });
    return it != header_.tensors.end() && it->name == name ? &*it : nullptr;
  }

  // The stored bytes of t (a tensor of this file).
  [[nodiscard]] std::span<const std::byte> bytes(const tensor_info& t) const {
    return bytes_.subspan(static_cast<std::size_t>(header_.data_offset + t.begin),
                          static_cast<std::size_t>(t.byte_size()));
  }

  // A zero-copy view of tensor `name` (see typed_view for when it fails).
  template <class T, std::size_t Rank>
  [[nodiscard]] result<tensor_view<const T, Rank>> view(std::string_view name) const {
    const tensor_info* t = find(name);
    if (t == nullptr) return status{errc::invalid_argument, name_ + ": no tensor " + std::string(name)};
    return typed_view<T, Rank>(bytes(*t), t->type, t->shape, name_ + ": " + t->name);
  }

 private:
  safetensors_file() = default;
  std::string name_;
  mapped_file map_;
  std::span<const std::byte> bytes_;
  header header_;
};

}  // namespace dsv4::io
