#include "attempt.hpp"

#include "abi_view.hpp"
#include "cache.hpp"
#include "image.hpp"
#include "interrupt.hpp"
#include "plugin_guard.hpp"

#include <fstream>

namespace kiln::host {

WorkDir::WorkDir(fs::path p) : path(std::move(p)) {
  std::error_code ec;
  fs::create_directories(path, ec);
}

WorkDir::~WorkDir() {
  std::error_code ec;
  fs::remove_all(path, ec);
}

std::optional<Fault> run_validators(Workspace& ws, const AssetSpec& spec, const std::string& bytes,
                                    const fs::path& work, std::string& source) {
  if (spec.validators.empty())
    return std::nullopt;
  auto decoded = decode_image(bytes, ws.manifest.max_decoded_pixels);
  std::string work_file = (work / ("candidate." + spec.format)).string();
  kiln_image img_view{};
  kiln_image_file file{};
  file.struct_size = sizeof file;
  file.path = ks(work_file);
  file.bytes = reinterpret_cast<const uint8_t*>(bytes.data());
  file.size = bytes.size();
  std::string detected(detect_format(bytes));
  file.detected_format = ks(detected);
  std::string decode_error;
  if (decoded) {
    img_view = {decoded->width, decoded->height, size_t(decoded->width) * 4, decoded->rgba.data()};
    file.image = &img_view;
  } else {
    decode_error = decoded.error().message;
  }
  file.decode_error = ks(decode_error);
  // A scratch copy so validators can open the file by path; the bytes they judge are in memory.
  std::ofstream(work_file, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  AssetView asset = asset_view(spec); // validators judge against the asset as declared
  std::optional<Fault> rejected;
  for (auto& id : spec.validators) {
    const PluginInstance& v = *ws.plugins.validators.at(id);
    kiln_result vr = ws.registry.make_result(id);
    PluginCall call(v.plugin().path.string(), v.plugin().id, "validate");
    kiln_status vs = v.plugin().validator()->validate(v.handle(), asset.get(), &file, &vr);
    if (vs != KILN_OK || vr.failed()) {
      // The first rejection is the one reported; the validators after it still say what else
      // the image lacks, so a fix names every missing property at once.
      if (rejected) {
        rejected->missing |= vr.missing_property;
        continue;
      }
      source = id;
      // A validator may say no image can pass (a setting contradicts the asset): permanent,
      // so the chain does not pay for new images that would be rejected the same way.
      rejected =
          Fault{vr.category == KILN_ERROR_PERMANENT ? KILN_ERROR_PERMANENT : KILN_ERROR_VALIDATION,
                plugin_failure("validator", id, "validate", "rejected the image", vr.message), -1,
                vr.missing_property};
    }
  }
  return rejected;
}

namespace {

// Runs the asset's postprocessors in order on the decoded image, each on what the one before
// made. A failure names its postprocessor in `source`: a validation failure (this image cannot
// be processed, another might) stays one; anything else is permanent, since a postprocessor
// has no transient failures.
std::optional<Fault> postprocess(Workspace& ws, const AssetSpec& spec, const GenerationRequest& req,
                                 Image& image, std::string& source) {
  if (spec.postprocess.empty())
    return std::nullopt;
  AssetView view = asset_view(spec, &req.model);
  for (auto& id : spec.postprocess) {
    // Ctrl-C is seen between postprocessors: the model's image is in the cache already.
    if (interrupted())
      return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
    const PluginInstance& inst = *ws.plugins.postprocessors.at(id);
    source = id;
    kiln_image raw = image.raw();
    kiln_result r = ws.registry.make_result(id);
    PluginCall call(inst.plugin().path.string(), inst.plugin().id, "process");
    kiln_status st = inst.plugin().postprocessor()->process(inst.handle(), view.get(), &raw, &r);
    if (st != KILN_OK || r.failed()) {
      Fault f = r.failure();
      if (f.category != KILN_ERROR_VALIDATION)
        f.category = KILN_ERROR_PERMANENT;
      f.message =
          plugin_failure("postprocessor", id, "process", "failed", ws.log.redact(r.message));
      return f;
    }
    if (r.image) {
      // A postprocessor has no business growing the image past the asset and what it was
      // given (a runaway one would take the machine's memory at every retry).
      uint64_t bound =
          4 * std::max(uint64_t(image.width) * image.height, uint64_t(spec.width) * spec.height);
      if (uint64_t(r.image->width) * r.image->height > bound)
        return Fault{KILN_ERROR_PERMANENT,
                     "postprocessor '" + id + "' returned a " + std::to_string(r.image->width) +
                         "x" + std::to_string(r.image->height) + " image from a " +
                         std::to_string(image.width) + "x" + std::to_string(image.height) +
                         " one for a " + std::to_string(spec.width) + "x" +
                         std::to_string(spec.height) + " asset: more than four times the larger",
                     -1};
      image = std::move(*r.image);
    }
  }
  return std::nullopt;
}

// The model's image made game-ready: postprocessors, then fitted to the asset's size, encoded,
// and judged by the validators on exactly the bytes that will be written.
Result<Generated> finish_image(Workspace& ws, const AssetSpec& spec, const GenerationRequest& req,
                               Image image, const fs::path& work, AttemptRecord& record) {
  if (auto failed = postprocess(ws, spec, req, image, record.source))
    return *failed;
  record.source = "kiln";
  if (interrupted())
    return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
  Generated g;
  if (image.width != spec.width || image.height != spec.height)
    ws.log.debug(spec.name + ": the image is " + std::to_string(image.width) + "x" +
                 std::to_string(image.height) + "; scaled to cover " + std::to_string(spec.width) +
                 "x" + std::to_string(spec.height) + " and cropped evenly");
  g.bytes = encode_image(fit_image(image, spec.width, spec.height), spec.format);
  if (auto rejected = run_validators(ws, spec, g.bytes, work, record.source))
    return *rejected;
  return g;
}

// The model's image for this very request, bought by an earlier run (only the postprocessing
// changed, or it failed a check), made game-ready again for free. Nullopt when the cache does
// not hold a readable one.
std::optional<Result<Generated>> from_cache(Workspace& ws, const PlannedAsset& p,
                                            const GenerationRequest& req, const std::string& source,
                                            const std::string& fingerprint, AttemptRecord& record,
                                            SlotLease& slot) {
  auto bytes = ws.cache.get(source, k_source_format);
  if (!bytes)
    return std::nullopt;
  auto decoded = decode_image(*bytes, ws.manifest.max_decoded_pixels);
  if (!decoded) {
    ws.log.warning(p.spec.name + ": the model's image in the cache is damaged (" +
                   decoded.error().message + "); asking the backend again");
    return std::nullopt;
  }
  slot.release();
  record.from_cache = true;
  record.source = "kiln";
  WorkDir scratch(ws.state.dir() / "work" / fingerprint);
  return finish_image(ws, p.spec, req, std::move(*decoded), scratch.path, record);
}

// The backend's generate() for `req`. A paid backend's job is journaled before it may be
// created and the moment its id is known, so a run killed at any point leaves its successor
// enough to re-attach instead of paying again; what it cost is counted once.
std::optional<Fault> call_backend(Workspace& ws, const PluginInstance& backend,
                                  const PlannedAsset& p, const GenerationRequest& req,
                                  const kiln_request& q, AttemptRecord& record, kiln_result& r) {
  const std::string& name = p.spec.name;
  const std::string fingerprint(q.fingerprint.data, q.fingerprint.size);
  bool remote = !(backend.plugin().backend()->capabilities & KILN_BACKEND_OFFLINE);
  if (remote) {
    ws.state.creating(name, fingerprint, req.backend);
    r.on_remote_id = [&](const std::string& id) {
      ws.state.submitted(name, fingerprint, req.backend, id);
    };
  }
  PluginCall call(backend.plugin().path.string(), backend.plugin().id, "generate");
  kiln_status st = backend.plugin().backend()->generate(backend.handle(), &q, &r);
  record.cost_usd = r.cost_usd.value_or(0);
  record.remote_id = r.remote_id;
  bool delivered = st == KILN_OK && !r.failed();
  if (remote) {
    ws.state.job_done(fingerprint, req.backend);
    if ((delivered || record.cost_usd > 0) &&
        !ws.state.spent(name, record.remote_id, record.cost_usd, delivered)) {
      ws.log.debug(name + ": job " + record.remote_id +
                   " was paid for by an earlier run; not counted again");
      record.cost_usd = 0;
    }
  }
  if (delivered)
    return std::nullopt;
  Fault f = r.failure();
  if (f.category == KILN_ERROR_NONE)
    f = {KILN_ERROR_PERMANENT, "backend failed without saying why", -1};
  f.message = ws.log.redact(f.message);
  if (is_plugin_bug(f.message)) // a backend's own errors read well alone; its bugs are named
    f.message = plugin_failure("backend", req.backend, "generate", "failed", f.message);
  return f;
}

// The model's image as delivered, in the cache under `source`. A cache that cannot be written
// costs only that saving.
void keep_source(Workspace& ws, const AssetSpec& spec, const std::string& source,
                 std::string_view bytes) {
  try {
    ws.cache.put(source, k_source_format, bytes);
  } catch (const std::exception& e) {
    ws.log.warning(spec.name + ": cannot keep the model's image in the cache: " + e.what());
  }
}

// The image a backend delivered, in memory or as a file. The model's image as delivered, before
// any postprocessing, goes into the cache under `source`: a change to the postprocessing alone
// then costs nothing (a cache that cannot be written costs only that saving).
Result<Image> delivered_image(Workspace& ws, const AssetSpec& spec, kiln_result& r,
                              const std::optional<std::string>& source) {
  if (r.image) {
    // In memory (a backend that decodes its service's answer itself): kept all the same, as a
    // lossless PNG, so that a paid image is never bought again for a postprocessing change.
    if (source)
      keep_source(ws, spec, *source, encode_image(*r.image, "png"));
    return std::move(*r.image);
  }
  if (r.image_file.empty())
    return Fault{KILN_ERROR_PERMANENT, "backend reported success but gave no image", -1};
  auto bytes = read_file(r.image_file);
  if (!bytes)
    return Fault{KILN_ERROR_RETRYABLE, "backend's image file '" + r.image_file + "' cannot be read",
                 -1, 0, "corrupt"};
  auto decoded = decode_image(*bytes, ws.manifest.max_decoded_pixels);
  if (!decoded) {
    const Fault& why = decoded.error();
    return Fault{KILN_ERROR_RETRYABLE,
                 (why.download == "unsupported" ? "backend returned an unsupported image: "
                                                : "backend returned a corrupt image: ") +
                     why.message,
                 -1, 0, why.download.empty() ? "corrupt" : why.download};
  }
  if (source)
    keep_source(ws, spec, *source, *bytes);
  return std::move(*decoded);
}

} // namespace

Result<Generated> attempt_image(Workspace& ws, const PlannedAsset& p, const GenerationRequest& req,
                                const std::string& fingerprint, uint32_t attempt,
                                const Resume& resume, AttemptRecord& record, SlotLease& slot) {
  // --force asks the model again.
  auto source = source_key(ws, req);
  bool reuse = source && !p.force;
  if (reuse)
    if (auto done = from_cache(ws, p, req, *source, fingerprint, record, slot))
      return std::move(*done);
  // One process at a time pays for a request: a second build tree sharing the cache waits
  // here, then takes the first one's image.
  std::optional<Cache::Lease> lease;
  if (reuse) {
    lease = ws.cache.lease(*source, [&] {
      ws.log.warning(p.spec.name + ": another kiln is making the same image; waiting for it");
    });
    if (!lease)
      return Fault{KILN_ERROR_INTERRUPTED, "the run was interrupted", -1};
    if (auto done = from_cache(ws, p, req, *source, fingerprint, record, slot))
      return std::move(*done);
  }
  record.source = req.backend;
  const PluginInstance* backend = find_backend(ws, req.backend);
  if (!backend)
    return Fault{KILN_ERROR_PERMANENT,
                 "backend '" + req.backend +
                     "' is not started in this run (a strategy may switch to a backend that an "
                     "asset names, or to an offline one)",
                 -1};
  WorkDir scratch(ws.state.dir() / "work" / fingerprint);
  AssetView view = asset_view(p.spec, &req.model);
  std::string work = scratch.path.string();
  kiln_request q =
      request_view(req, view.get(), fingerprint, work, attempt, resume.job, resume.lost_create);
  kiln_result r = ws.registry.make_result(backend->plugin().id);
  if (auto failed = call_backend(ws, *backend, p, req, q, record, r))
    return *failed;
  // From here on the backend delivered: a failure is the image's, not the job's, and the
  // backend's slot is free for the next job.
  slot.release();
  record.source = "kiln";
  auto image = delivered_image(ws, p.spec, r, source);
  if (!image)
    return image.error();
  return finish_image(ws, p.spec, req, std::move(*image), scratch.path, record);
}

} // namespace kiln::host
