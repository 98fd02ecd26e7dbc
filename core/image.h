// core/image.h: 8-bit images in memory, decoding (JPEG, PNG, and whatever
// else stb_image reads), resizing, and atomic PNG writing.
//
// An Image is interleaved HWC (row-major, channels last), the layout image
// files use. Datasets store CHW (see core/dataset.h); hwc_to_chw and
// chw_to_hwc convert one image between the two.
//
//     Image img = load_image("cat.jpg");              // RGB, throws naming the file
//     bool resized = false;
//     Image small = resize_to(img, 32, 32, resized);   // no-op when already 32x32
//     write_png("out/cat.png", small);                 // temp file + rename
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace octet {

struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;             // 1 (gray), 3 (RGB) or 4 (RGBA)
  std::vector<uint8_t> pixels;  // height * width * channels, HWC

  uint8_t& at(int y, int x, int c) { return pixels[(size_t(y) * width + x) * channels + c]; }
  uint8_t at(int y, int x, int c) const { return pixels[(size_t(y) * width + x) * channels + c]; }
};

// Reads a whole file into memory; throws std::runtime_error naming the file.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Decodes an encoded image (JPEG, PNG, BMP, ...) to `channels` channels
// (1 or 3: gray is replicated to RGB, alpha is dropped). `name` is used in the
// error message, which also carries stb_image's reason ("bad huffman code").
Image decode_image(std::span<const uint8_t> bytes, const std::string& name, int channels = 3);

// read_file_bytes + decode_image.
Image load_image(const std::string& path, int channels = 3);

enum class ResizeFilter {
  bilinear,  // sample at output pixel centers, interpolate the 4 neighbours
  area,      // average of the input pixels the output pixel covers (good for shrinking)
};

// Resamples to width x height (same channel count).
Image resize(const Image& src, int width, int height, ResizeFilter filter = ResizeFilter::area);

// Returns src unchanged when it already is width x height (resized = false),
// otherwise resize(src, ...) with resized = true.
Image resize_to(const Image& src, int width, int height, bool& resized,
                ResizeFilter filter = ResizeFilter::area);

// Encodes as PNG and writes atomically: the bytes go to "<path>.tmp-<pid>"
// first, which is then renamed over path, so a reader never sees a half file.
// Throws std::runtime_error naming the path on failure.
void write_png(const std::string& path, const Image& img);
void write_png(const std::string& path, const uint8_t* hwc, int width, int height, int channels);

// Writes bytes to path atomically (same temp-then-rename scheme).
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);

// Layout conversion for one image: HWC <-> CHW.
void hwc_to_chw(const uint8_t* hwc, uint8_t* chw, int height, int width, int channels);
void chw_to_hwc(const uint8_t* chw, uint8_t* hwc, int height, int width, int channels);

}  // namespace octet
