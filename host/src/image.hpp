// Decoding, converting and encoding images: the host's one image pipeline, shared by every
// backend so that outputs are exactly the declared size and format whatever a model returns.
#pragma once

#include "result.hpp"

#include <kiln/image_format.hpp>
#include <kiln/kiln.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::host {

// The most pixels Kiln decodes from one file (8192 x 8192: 256 MiB of RGBA). Models deliver at
// most a few megapixels; more is a mistake or a decompression bomb. [project]
// max_image_megapixels sets another limit.
constexpr uint64_t k_max_decoded_pixels = 8192ull * 8192ull;

// Fully decodes PNG, JPEG or WebP into RGBA. An image declaring more than `max_pixels` is refused
// from its header, before any large allocation. Decodes running at once (every job's) hold at
// most about `max_pixels` between them, unless one image alone is larger: a big image waits for
// the others, so a burst of large answers costs one image's memory at a time, not one per job.
Result<Image> decode_image(std::string_view bytes, uint64_t max_pixels = k_max_decoded_pixels);

// The format and size an image file declares in its header, without decoding it; nullopt when
// the bytes are no PNG, JPEG or WebP Kiln can read.
struct ImageProbe {
  std::string format; // "png", "jpg", "webp"
  uint32_t width = 0, height = 0;
};
std::optional<ImageProbe> probe_image(std::string_view bytes);

// The largest side Kiln makes or scales to, in pixels.
constexpr uint32_t k_max_image_side_px = 16384;
// Scales to cover `width`x`height` and crops the overflow evenly: exact pixels, no stretching.
Image fit_image(const Image& image, uint32_t width, uint32_t height);

// Scales the whole image to `width`x`height` (stretching if the aspect differs), with the same
// gamma-correct, alpha-weighted filter as fit_image. Plugins reach it as
// kiln_host_api::scale_image.
Image scale_image(const Image& image, uint32_t width, uint32_t height);

// Encodes as "png", "jpg" or "webp". JPEG has no alpha: transparent pixels are flattened onto
// white. Deterministic: the same pixels give the same bytes.
std::string encode_image(const Image& image, std::string_view format);

} // namespace kiln::host
