// The state: a snapshot plus an append-only journal. What a killed run recorded must be there
// for the next one, a torn last record must not poison the file, and compaction must keep
// every record.
#include "cache.hpp"
#include "image.hpp"
#include "state.hpp"
#include "test_support.hpp"

#include <fstream>

namespace kiln::host {
namespace {

using test::TempDir;

OutputRecord record(const std::string& output, char fp_digit, uint64_t size) {
  OutputRecord r;
  r.output = output;
  r.fingerprint = std::string(64, fp_digit);
  r.size = size;
  r.mtime_ns = 1700000000000000000 + int64_t(size);
  r.fields = {{"prompt", "a sword " + output}, {"model", "m"}};
  r.checks = "checks-" + output;
  return r;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(State, ARecordIsInTheJournalTheMomentPutReturns) {
  TempDir dir;
  {
    StateFile state(dir.path());
    ASSERT_FALSE(state.load());
    state.put("icons/sword", record("icons/sword.png", 'a', 10));
    // No save(): the run is killed here.
  }
  StateFile next(dir.path());
  EXPECT_FALSE(next.load());
  auto e = next.find("icons/sword");
  ASSERT_TRUE(e);
  EXPECT_EQ(hex_of(e->fingerprint), std::string(64, 'a'));
  EXPECT_EQ(e->size, 10u);
  EXPECT_TRUE(next.same_output(*e, "icons/sword.png"));
  EXPECT_FALSE(next.same_output(*e, "icons/sword.webp"));
  EXPECT_EQ(next.checks(*e), "checks-icons/sword.png");
  auto full = next.record(*e);
  ASSERT_TRUE(full);
  EXPECT_EQ(full->fields, record("icons/sword.png", 'a', 10).fields);
  EXPECT_TRUE(next.dirty()); // the journal is folded into the snapshot at the end of the run
}

TEST(State, ATornLastRecordIsDroppedAndTheRestKept) {
  TempDir dir;
  {
    StateFile state(dir.path());
    state.load();
    state.put("a", record("a.png", 'a', 1));
    state.put("b", record("b.png", 'b', 2));
  }
  fs::path journal = dir.path() / "journal.jsonl";
  std::string whole = read(journal);
  // A crash in the middle of appending the third record.
  std::ofstream(journal, std::ios::app) << R"({"t":"written","name":"c","output":"c.pn)";
  StateFile next(dir.path());
  EXPECT_FALSE(next.load());
  EXPECT_TRUE(next.find("a"));
  EXPECT_TRUE(next.find("b"));
  EXPECT_FALSE(next.find("c"));
  EXPECT_EQ(read(journal), whole); // cut back to the last whole record
  // Appending after the cut gives whole lines again.
  next.put("c", record("c.png", 'c', 3));
  StateFile third(dir.path());
  third.load();
  EXPECT_TRUE(third.find("c"));
  EXPECT_EQ(third.size(), 3u);
}

// 200,000 nested arrays in the journal or the snapshot (a hostile or damaged file): parsed
// without recursion, ignored as no record, and no crash (issue 16).
TEST(State, DeeplyNestedJsonInTheJournalOrSnapshotIsNoCrash) {
  TempDir dir;
  {
    StateFile state(dir.path());
    state.load();
    state.put("a", record("a.png", 'a', 1));
  }
  std::string deep = std::string(200000, '[') + std::string(200000, ']') + "\n";
  std::ofstream(dir.path() / "journal.jsonl", std::ios::app) << deep;
  std::ofstream(dir.path() / "state.jsonl", std::ios::binary) << "{\"kiln_state\":2}\n" << deep;
  StateFile next(dir.path());
  next.load();
  EXPECT_TRUE(next.find("a"));
}

TEST(State, SaveFoldsTheJournalIntoTheSnapshotAndEmptiesIt) {
  TempDir dir;
  StateFile state(dir.path());
  state.load();
  for (int i = 0; i < 300; ++i) // more than one rehash and one copy buffer
    state.put("asset" + std::to_string(i),
              record("asset" + std::to_string(i) + ".png", "0123456789abcdef"[i % 16], i));
  state.put("asset7", record("asset7.png", 'f', 777)); // a later record of the same asset wins
  state.save();
  EXPECT_FALSE(state.dirty());
  EXPECT_EQ(fs::file_size(state.journal_path()), 0u);
  // Found through the new snapshot, in this process and the next.
  for (StateFile* s : {&state}) {
    auto e = s->find("asset7");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->size, 777u);
    EXPECT_EQ(s->record(*e)->fields[0].second, "a sword asset7.png");
  }
  StateFile next(dir.path());
  EXPECT_FALSE(next.load());
  EXPECT_FALSE(next.dirty());
  EXPECT_EQ(next.size(), 300u);
  EXPECT_EQ(next.find("asset7")->size, 777u);
  EXPECT_EQ(next.find("asset299")->size, 299u);
  std::string snapshot = read(next.path());
  EXPECT_EQ(snapshot.substr(0, snapshot.find('\n')), R"({"kiln_state":2})");
}

TEST(State, RetainForgetsUndeclaredAssets) {
  TempDir dir;
  StateFile state(dir.path());
  state.load();
  state.put("keep", record("keep.png", 'a', 1));
  state.put("drop", record("drop.png", 'b', 2));
  state.save();
  state.retain({"keep"});
  EXPECT_TRUE(state.dirty());
  EXPECT_TRUE(state.find("keep"));
  EXPECT_FALSE(state.find("drop"));
  state.save();
  StateFile next(dir.path());
  next.load();
  EXPECT_EQ(next.size(), 1u);
}

TEST(State, ACorruptSnapshotIsReportedAndRebuilt) {
  TempDir dir;
  fs::create_directories(dir.path());
  std::ofstream(dir.path() / "state.jsonl") << "{\"kiln_state\":2}\n{oops\n";
  StateFile state(dir.path());
  auto warning = state.load();
  ASSERT_TRUE(warning);
  EXPECT_NE(warning->find("is not valid; rebuilding it (images come back from the cache)"),
            std::string::npos);
  EXPECT_EQ(state.size(), 0u);
  EXPECT_TRUE(state.dirty());

  std::ofstream(dir.path() / "state.jsonl") << "{\"version\":1}\n";
  EXPECT_NE(state.load()->find("has another version"), std::string::npos);
}

TEST(State, AJobLeftByAKilledRunIsPendingUntilItsOutputIsWritten) {
  TempDir dir;
  std::string written_fp(64, 'a'), open_fp(64, 'b');
  {
    StateFile state(dir.path());
    state.load();
    state.creating("a", written_fp, "replicate");
    state.submitted("a", written_fp, "replicate", "job-a");
    state.put("a", record("a.png", 'a', 1));
    state.creating("b", open_fp, "replicate");
    state.submitted("b", open_fp, "replicate", "job-b");
    state.creating("c", std::string(64, 'c'), "replicate"); // killed before the answer
  }                                                         // killed: no save()
  StateFile next(dir.path());
  next.load();
  EXPECT_FALSE(next.pending(written_fp, "replicate")); // its output was written
  auto b = next.pending(open_fp, "replicate");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->job, "job-b");
  EXPECT_FALSE(b->lost_create);
  auto c = next.pending(std::string(64, 'c'), "replicate");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->job.empty());
  EXPECT_TRUE(c->lost_create);
  EXPECT_FALSE(next.pending(open_fp, "another-backend"));
  // A run's end keeps the open jobs for the next run, and only them.
  next.save();
  StateFile third(dir.path());
  third.load();
  EXPECT_FALSE(third.pending(written_fp, "replicate"));
  EXPECT_EQ(third.pending(open_fp, "replicate")->job, "job-b");
  EXPECT_TRUE(third.pending(std::string(64, 'c'), "replicate")->lost_create);
}

// A job id read back from the journal goes into a backend's URL: one that no provider makes
// ('/', space, control characters, overlong) is forgotten, not handed on (issue 16).
TEST(State, ImplausibleJobIdsInTheJournalAreForgotten) {
  TempDir dir;
  std::vector<std::string> ids = {"../../steal",         "a b",      "abc#frag",
                                  std::string(200, 'a'), "x\x1b[2J", "ok-job_1.2:3"};
  {
    StateFile state(dir.path());
    state.load();
    for (size_t i = 0; i < ids.size(); ++i)
      state.submitted("a" + std::to_string(i), std::string(64, char('a' + i)), "replicate", ids[i]);
  }
  StateFile next(dir.path());
  next.load();
  for (size_t i = 0; i + 1 < ids.size(); ++i)
    EXPECT_FALSE(next.pending(std::string(64, char('a' + i)), "replicate")) << ids[i];
  EXPECT_EQ(next.pending(std::string(64, char('a' + ids.size() - 1)), "replicate")->job,
            "ok-job_1.2:3");
}

} // namespace
} // namespace kiln::host

namespace kiln::host {
namespace {

using test::TempDir;

std::string png_of(uint32_t w, uint32_t h, uint8_t shade) {
  Image img(w, h);
  for (size_t i = 0; i < img.rgba.size(); ++i)
    img.rgba[i] = i % 4 == 3 ? 255 : uint8_t(shade + i % 7);
  return encode_image(img, "png");
}

const std::string k_fp = std::string(64, 'a');

TEST(Cache, KeepsBytesByDigestAndChecksEveryRead) {
  TempDir dir;
  Cache cache(dir / "cache");
  std::string good = png_of(32, 32, 10);
  cache.put(k_fp, "png", good);
  EXPECT_TRUE(cache.contains(k_fp, "png"));
  EXPECT_TRUE(cache.has_content(sha256_hex(good)));
  Cache::Expect expect{"png", 32, 32, ""};
  EXPECT_EQ(cache.get(k_fp, "png", expect), good);
  EXPECT_EQ(cache.rejected(), 0u);
  // Content replaced by another valid image (a poisoned shared cache): caught by its digest,
  // removed, counted.
  write_file_atomic(cache.content_path(sha256_hex(good)), png_of(999, 7, 10));
  std::string why;
  EXPECT_FALSE(cache.get(k_fp, "png", expect, &why));
  EXPECT_EQ(why, "its bytes do not match their digest");
  EXPECT_EQ(cache.rejected(), 1u);
  EXPECT_FALSE(cache.contains(k_fp, "png"));
}

TEST(Cache, AnEntryOfTheWrongSizeOrOtherBytesThanRecordedIsAMiss) {
  TempDir dir;
  Cache cache(dir / "cache");
  cache.put(k_fp, "png", png_of(999, 7, 10)); // a consistent entry, but not this asset's
  std::string why;
  EXPECT_FALSE(cache.get(k_fp, "png", Cache::Expect{"png", 32, 32, ""}, &why));
  EXPECT_EQ(why, "it is 999x7, the asset is 32x32");
  cache.put(k_fp, "png", png_of(32, 32, 10));
  EXPECT_FALSE(cache.get(k_fp, "png", Cache::Expect{"webp", 32, 32, ""}, &why));
  EXPECT_EQ(why, "it is a png, the asset wants webp");
  std::string recorded = png_of(32, 32, 90);
  cache.put(k_fp, "png", png_of(32, 32, 10));
  EXPECT_FALSE(cache.get(k_fp, "png", Cache::Expect{"png", 32, 32, sha256_hex(recorded)}, &why));
  EXPECT_EQ(why, "its bytes are not the ones recorded for it");
  EXPECT_EQ(cache.rejected(), 3u);
  // An entry file that is not Kiln's.
  cache.put(k_fp, "png", recorded);
  write_file_atomic(dir / "cache" / "ac" / "aa" / (k_fp + ".png"), png_of(8, 8, 1));
  EXPECT_FALSE(cache.get(k_fp, "png", {}, &why));
  EXPECT_EQ(why, "its entry is not one Kiln wrote");
}

TEST(Cache, EntriesOfTheFirstLayoutAreCheckedAndMovedOver) {
  TempDir dir;
  Cache cache(dir / "cache");
  std::string old = png_of(16, 16, 40);
  write_file_atomic(dir / "cache" / "v1" / "aa" / (k_fp + ".png"), old);
  EXPECT_TRUE(cache.contains(k_fp, "png"));
  EXPECT_EQ(cache.get(k_fp, "png", Cache::Expect{"png", 16, 16, ""}), old);
  EXPECT_FALSE(fs::exists(dir / "cache" / "v1" / "aa" / (k_fp + ".png")));
  EXPECT_TRUE(fs::exists(dir / "cache" / "ac" / "aa" / (k_fp + ".png")));
  // A first-layout entry of the wrong size is removed too.
  write_file_atomic(dir / "cache" / "v1" / "bb" / (std::string(64, 'b') + ".png"), old);
  EXPECT_FALSE(cache.get(std::string(64, 'b'), "png", Cache::Expect{"png", 8, 8, ""}));
  EXPECT_EQ(cache.rejected(), 1u);
}

// Only Kiln's own temp names are leftovers; look-alikes are someone's files (issue 16).
TEST(State, OnlyKilnsOwnTempNamesAreLeftovers) {
  EXPECT_TRUE(is_output_temp_name("sword.png.kiln-tmp.00c0ffee00c0ffee"));
  EXPECT_TRUE(is_output_temp_name("a.webp.kiln-tmp.0123456789abcdef"));
  for (const char* name :
       {"notes.kiln-tmp.backup", "main.kiln-tmp.c", "sword.png.kiln-tmp.",
        "sword.png.kiln-tmp.00C0FFEE00C0FFEE", "state.jsonl.kiln-tmp.00c0ffee00c0ffee",
        ".png.kiln-tmp.00c0ffee00c0ffee", "sword.png.kiln-tmp.00c0ffee00c0ffee0"})
    EXPECT_FALSE(is_output_temp_name(name)) << name;
}

// What a killed run spent counts against the next budget; a planted or damaged value that no
// image costs (negative, 1e308, not finite) does not (issue 16).
TEST(State, OnlyPlausibleSpendsInTheJournalCount) {
  TempDir dir;
  {
    StateFile state(dir.path());
    state.load();
    state.spent("a", "job1", 0.003, true);
  }
  std::ofstream(dir.path() / "journal.jsonl", std::ios::app)
      << R"({"t":"spent","name":"b","job":"job2","usd":-5})"
         "\n"
      << R"({"t":"spent","name":"c","job":"job3","usd":1e308})"
         "\n"
      << R"({"t":"downloaded","name":"d","job":"job4","usd":0.04})"
         "\n";
  StateFile next(dir.path());
  next.load();
  EXPECT_NEAR(next.spent_before(), 0.043, 1e-12);
}

// Temp files killed runs left in the cache go, once they are old; a live writer's and
// anything else stay (issue 16).
TEST(State, TheCacheSweepsOldTempFilesOfKilledRuns) {
  TempDir dir;
  Cache cache(dir.path());
  fs::path old_tmp = dir / "cas/ab/abcd.kiln-tmp.00c0ffee00c0ffee";
  fs::path young_tmp = dir / "ac/ab/abcd.png.kiln-tmp.00c0ffee00c0ffef";
  fs::path other = dir / "cas/ab/notes.kiln-tmp.backup";
  for (auto& p : {old_tmp, young_tmp, other}) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << "x";
  }
  fs::last_write_time(old_tmp, fs::file_time_type::clock::now() - std::chrono::hours(2));
  EXPECT_EQ(cache.sweep_stale_temp_files(), 1u);
  EXPECT_FALSE(fs::exists(old_tmp));
  EXPECT_TRUE(fs::exists(young_tmp));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_EQ(cache.sweep_stale_temp_files(), 0u); // not again within a day
}

// A link planted in the cache's own folders is never written through (issue 16); the cache
// folder itself may be a link.
TEST(Cache, LinksPlantedBelowTheCacheFolderAreNotFollowed) {
  TempDir dir;
  fs::create_directories(dir / "real-cache");
  fs::create_directory_symlink(dir / "real-cache", dir / "cache");
  fs::create_directories(dir / "elsewhere");
  Cache cache(dir / "cache");
  std::string image = png_of(16, 16, 3);
  const std::string sha = sha256_hex(image);
  fs::create_directories(dir / "real-cache/cas");
  fs::create_directory_symlink(dir / "elsewhere", dir / "real-cache/cas" / sha.substr(0, 2));
  std::string message;
  try {
    cache.put(k_fp, "png", image);
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  EXPECT_EQ(message,
            "'" + (dir / "cache/cas" / sha.substr(0, 2)).string() +
                "' is a symbolic link: Kiln writes its cache only into real folders below the "
                "cache folder (remove the link)");
  fs::create_directory_symlink(dir / "elsewhere", dir / "real-cache/edits");
  EXPECT_THROW(cache.keep_edit(image, "icons/sword", "png"), std::runtime_error);
  fs::create_directories(dir / "real-cache/leases");
  fs::create_directory_symlink(dir / "elsewhere",
                               dir / "real-cache/leases" / std::string(k_fp).substr(0, 2));
  auto lease = cache.lease(k_fp, [] {});
  EXPECT_TRUE(lease.has_value()); // unleased, as on a read-only cache
  EXPECT_TRUE(fs::is_empty(dir / "elsewhere"));
  // With the links gone, the same calls write into the (linked) cache folder.
  fs::remove(dir / "real-cache/cas" / sha.substr(0, 2));
  cache.put(k_fp, "png", image);
  EXPECT_TRUE(fs::exists(dir / "real-cache/cas" / sha.substr(0, 2) / sha));
  // A bad entry reached through a planted link is a miss, and the file there is not removed.
  fs::remove_all(dir / "real-cache/ac" / std::string(k_fp).substr(0, 2));
  fs::create_directory_symlink(dir / "elsewhere",
                               dir / "real-cache/ac" / std::string(k_fp).substr(0, 2));
  std::ofstream(dir / "elsewhere" / (std::string(k_fp) + ".png")) << "not an entry";
  std::string why;
  EXPECT_FALSE(cache.get(k_fp, "png", Cache::Expect{"png", 16, 16, ""}, &why));
  EXPECT_TRUE(fs::exists(dir / "elsewhere" / (std::string(k_fp) + ".png")));
}

} // namespace
} // namespace kiln::host
