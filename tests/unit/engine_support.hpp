#pragma once

#include "cache.hpp"
#include "engine.hpp"
#include "state.hpp"
#include "test_support.hpp"

#include <memory>

namespace kiln::host::test {

// A manifest in a temp folder with the built-in plugins, its state and a private cache: what
// the CLI sets up for one run.
struct Project {
  TempDir dir;
  Log log{KILN_LOG_ERROR};
  std::unique_ptr<PluginRegistry> registry;
  Manifest manifest;
  PluginSet plugins;
  std::unique_ptr<StateFile> state;
  std::unique_ptr<Cache> cache;

  explicit Project(const std::string& text) { reload(text); }

  void reload(const std::string& text) {
    plugins = {};
    registry = std::make_unique<PluginRegistry>(log);
    registry->load_directory(KILN_PLUGIN_BUILD_DIR);
    manifest = parse_manifest(text, dir / "assets.toml", "assets.toml");
    plugins = instantiate_manifest_plugins(*registry, manifest);
    state = std::make_unique<StateFile>(dir / "state");
    state->load();
    cache = std::make_unique<Cache>(dir / "cache");
  }
  Workspace workspace() { return Workspace{manifest, *registry, plugins, log, *state, *cache}; }
  Plan plan() {
    Workspace ws = workspace();
    return make_plan(ws, {});
  }
  PlannedAsset planned(const Plan& plan, const std::string& name) {
    Workspace ws = workspace();
    for (size_t i = 0; i < plan.size(); ++i)
      if (manifest.name(plan.entries[i].asset) == name)
        return plan.asset(ws, i);
    throw std::runtime_error("no asset " + name);
  }
  std::string fingerprint(const std::string& name) {
    Plan p = plan();
    return planned(p, name).fingerprint;
  }
};

} // namespace kiln::host::test
