#pragma once

#include <csignal>
#include <cstdio>
#include <gtest/gtest.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace kiln::host::test {

// A server the test starts itself: a program that prints its port on its first line of output.
// Killed when the object goes away.
class ServerProcess {
public:
  explicit ServerProcess(std::vector<std::string> argv) {
    int fds[2];
    if (pipe(fds) != 0)
      throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(a.data());
    args.push_back(nullptr);
    int rc = posix_spawnp(&m_pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    if (rc != 0)
      throw std::runtime_error("cannot start " + argv[0]);
    std::FILE* out = fdopen(fds[0], "r");
    char line[64] = "";
    if (!std::fgets(line, sizeof line, out))
      throw std::runtime_error(argv[0] + " printed no port");
    std::fclose(out);
    m_port = std::stoi(line);
  }
  ~ServerProcess() {
    kill(m_pid, SIGTERM);
    waitpid(m_pid, nullptr, 0);
  }
  int port() const { return m_port; }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(m_port) + path;
  }

private:
  pid_t m_pid = -1;
  int m_port = 0;
};

} // namespace kiln::host::test
