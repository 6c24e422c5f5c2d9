// Which plugin is running, for the moment it crashes: a fatal signal (SIGSEGV, SIGBUS, SIGILL,
// SIGFPE, SIGABRT) during a plugin's load or call prints the plugin's file and id before Kiln
// dies of it, and a plugin's load that does not return within a generous time is named.
#pragma once

#include <string_view>

namespace kiln::host {

// Installs the fatal-signal handler (on its own stack) and starts the load watchdog. Once.
void install_plugin_crash_reporting();

// Marks the calling thread as inside a plugin from construction to destruction; nests.
class PluginCall {
public:
  // `file` and `id` of the plugin, `what` it was asked ("create", "generate", "load").
  PluginCall(std::string_view file, std::string_view id, std::string_view what);
  ~PluginCall();
  PluginCall(const PluginCall&) = delete;
  PluginCall& operator=(const PluginCall&) = delete;

private:
  char m_previous[512];
  bool m_watched;
};

} // namespace kiln::host
