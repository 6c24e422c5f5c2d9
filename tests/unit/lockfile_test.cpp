// kiln.lock: the committed record. Deterministic and sorted, rewritten only when it changes,
// never replacing paid or adopted art with an offline image, refusing a file Kiln did not
// write, and keeping both runs' entries when two build trees save it.
#include "lockfile.hpp"
#include "test_support.hpp"

#include <cstdlib>
#include <fstream>

namespace kiln::host {
namespace {

using test::TempDir;

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

LockEntry entry(char fp, char sha, bool paid, double cost = 0) {
  LockEntry e;
  e.fingerprint = std::string(64, fp);
  e.sha256 = std::string(64, sha);
  e.backend = paid ? "replicate@1.2.0" : "placeholder@1.1.0";
  e.model = "black-forest-labs/flux-schnell";
  e.seed = 42;
  e.cost_usd = cost;
  e.paid = paid;
  return e;
}

// Every lock in these tests guards its saves under this folder, not the user's.
class LockfileTest : public ::testing::Test {
protected:
  void SetUp() override { ::setenv("KILN_STATE_DIR", (dir / "state").c_str(), 1); }
  void TearDown() override { ::unsetenv("KILN_STATE_DIR"); }
  TempDir dir;
};

TEST_F(LockfileTest, IsNamedAfterTheManifest) {
  EXPECT_EQ(Lockfile::path_for("/g/assets.toml"), fs::path("/g/kiln.lock"));
  EXPECT_EQ(Lockfile::path_for("/g/ui.toml"), fs::path("/g/ui.lock"));
}

TEST_F(LockfileTest, IsSortedDeterministicAndWrittenOnlyWhenItChanges) {
  fs::path path = dir / "kiln.lock";
  {
    Lockfile lock(path);
    lock.load(); // none yet: empty
    lock.set("icons/sword", entry('a', 'b', true, 0.003));
    lock.set("cover", entry('c', 'd', false));
    lock.set("ui/b-1.x_y", entry('e', 'f', false));
    EXPECT_TRUE(lock.save());
  }
  std::string text = read(path);
  EXPECT_LT(text.find("[assets.\"cover\"]"), text.find("[assets.\"icons/sword\"]"));
  EXPECT_NE(text.find("[assets.\"ui/b-1.x_y\"]"), std::string::npos) << text;
  EXPECT_NE(text.find("sha256 = \"" + std::string(64, 'b') +
                      "\"\nbackend = \"replicate@1.2.0\"\n"
                      "model = \"black-forest-labs/flux-schnell\"\nseed = 42\n"
                      "cost_usd = 0.003\npaid = true\n"),
            std::string::npos)
      << text;

  // Read back and set to the same: nothing is written, not even the same bytes again.
  auto before = fs::last_write_time(path);
  Lockfile again(path);
  again.load();
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again.find("icons/sword")->sha256, std::string(64, 'b'));
  EXPECT_TRUE(again.find("icons/sword")->paid);
  again.set("icons/sword", entry('a', 'b', true, 0.003));
  EXPECT_FALSE(again.save());
  EXPECT_EQ(fs::last_write_time(path), before);

  // One change: one entry's lines differ.
  again.set("cover", entry('c', '9', false));
  EXPECT_TRUE(again.save());
  std::string after = read(path);
  EXPECT_EQ(after.size(), text.size());
  size_t differing = 0;
  for (size_t i = 0; i < text.size(); ++i)
    differing += text[i] != after[i];
  EXPECT_EQ(differing, 64u);
}

TEST_F(LockfileTest, AnOfflineImageNeverReplacesPaidOrAdoptedArt) {
  fs::path path = dir / "kiln.lock";
  Lockfile lock(path);
  lock.load();
  lock.set("icons/sword", entry('a', 'b', true, 0.003));
  lock.set("icons/sword", entry('1', '2', false)); // CI's placeholder run
  EXPECT_EQ(lock.find("icons/sword")->fingerprint, std::string(64, 'a'));
  LockEntry adopted = entry('3', '4', false);
  adopted.adopted = true;
  lock.set("icons/shield", adopted);
  lock.set_backend_overridden(true); // kiln build --backend placeholder
  lock.set("icons/shield", entry('5', '6', false));
  EXPECT_TRUE(lock.find("icons/shield")->adopted);
  lock.set_backend_overridden(false); // --force or a changed prompt: the new image is the art
  lock.set("icons/shield", entry('5', '6', false));
  EXPECT_FALSE(lock.find("icons/shield")->adopted);
  EXPECT_EQ(lock.find("icons/shield")->sha256, std::string(64, '6'));
  lock.set("icons/sword", entry('7', '8', true, 0.003)); // a new paid image does
  EXPECT_EQ(lock.find("icons/sword")->fingerprint, std::string(64, '7'));
}

TEST_F(LockfileTest, TwoRunsSavingBothKeepTheirEntries) {
  fs::path path = dir / "kiln.lock";
  Lockfile debug(path), release(path);
  debug.load();
  release.load();
  debug.set("a", entry('a', 'a', true));
  release.set("b", entry('b', 'b', true));
  release.retain({"a", "b"});
  EXPECT_TRUE(debug.save());
  EXPECT_TRUE(release.save());
  Lockfile now(path);
  now.load();
  EXPECT_EQ(now.size(), 2u);
  EXPECT_TRUE(now.find("a") && now.find("b"));
  // A run that no longer declares "a" drops it, and only it.
  Lockfile later(path);
  later.load();
  later.retain({"b"});
  EXPECT_TRUE(later.save());
  Lockfile last(path);
  last.load();
  EXPECT_FALSE(last.find("a"));
  EXPECT_TRUE(last.find("b"));
}

// Another run rewrote the file meanwhile with the same size (its stamps may even match): the
// bytes tell, and its entries are merged; a file broken meanwhile loses nothing of this run's.
TEST_F(LockfileTest, SavingMergesByContentAndSurvivesABrokenFile) {
  fs::path path = dir / "kiln.lock";
  {
    Lockfile first(path);
    first.load();
    first.set("a", entry('a', '1', true));
    first.set("b", entry('b', '1', true));
    first.save();
  }
  Lockfile mine(path), theirs(path);
  mine.load();
  theirs.load();
  theirs.set("a", entry('a', '2', true)); // same length: same file size
  theirs.save();
  mine.set("b", entry('b', '3', true));
  mine.save();
  Lockfile now(path);
  now.load();
  EXPECT_EQ(now.find("a")->sha256, std::string(64, '2'));
  EXPECT_EQ(now.find("b")->sha256, std::string(64, '3'));

  Lockfile last(path);
  last.load();
  write(path, "<<<<<<< HEAD\n");
  last.set("c", entry('c', '4', true));
  last.save();
  Lockfile after(path);
  after.load();
  EXPECT_EQ(after.size(), 3u);
}

TEST_F(LockfileTest, AFileKilnDidNotWriteIsRefusedAtItsLine) {
  fs::path path = dir / "kiln.lock";
  write(path, "version = 1\n\n[assets.\"a\"]\nfingerprint = \"" + std::string(64, 'a') +
                  "\"\nsha256 = \"" + std::string(64, 'b') + "\"\n<<<<<<< HEAD\n");
  Lockfile lock(path);
  std::string message = test::fatal_message([&] { lock.load(); });
  EXPECT_NE(message.find("kiln.lock:6: a merge conflict: keep either side"), std::string::npos)
      << message;
  write(path, "version = 1\nsome words\n");
  message = test::fatal_message([&] { lock.load(); });
  EXPECT_NE(message.find("kiln.lock:2: not a line Kiln writes"), std::string::npos) << message;
  // An entry whose name is no asset name (a path out of the output folder) is refused: a
  // planted entry must not make a build delete a file elsewhere.
  for (std::string name : {"../docs/logo", "/tmp/holiday"}) {
    write(path, "version = 1\n[assets.\"" + name + "\"]\nfingerprint = \"" + std::string(64, 'a') +
                    "\"\nsha256 = \"" + std::string(64, 'b') + "\"\n");
    message = test::fatal_message([&] { lock.load(); });
    EXPECT_NE(message.find("kiln.lock:2: the entry \"" + name + "\" is no asset name"),
              std::string::npos)
        << message;
  }
  write(path, "version = 2\n");
  message = test::fatal_message([&] { lock.load(); });
  EXPECT_NE(message.find("version 2 is written by a newer kiln"), std::string::npos) << message;
  write(path, "version = 1\n[assets.\"a\"]\nsha256 = \"" + std::string(64, 'b') + "\"\n");
  message = test::fatal_message([&] { lock.load(); });
  EXPECT_NE(message.find("kiln.lock:2: the entry of 'a' has no fingerprint"), std::string::npos)
      << message;
}

} // namespace
} // namespace kiln::host
