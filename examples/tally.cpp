// tally.cpp: C++ that hotr rebuilds on save.  Run `.venv/bin/python examples/tally.py`, then change
// LABEL below (or what report() prints) and save: the tally carries on in the new version.
//
// The entry points are extern "C" so that Python finds them by their plain names.  The state
// lives in hotr's slot (see hotr.h): the first version allocates it, later versions take it
// over, so keep struct Tally's layout the same from one version to the next.  hotr builds C++
// with -fno-gnu-unique under g++: without it, a static local of an inline function would be
// shared with (and keep mapped) the first version that defined it.
#include <hotr.h>

#include <cstdio>
#include <map>
#include <string>

#define LABEL "seen"

struct Tally {
    std::map<std::string, int> counts;
};

static Tally *tally;

inline int &reports() {  // a static local of an inline function: each version has its own
    static int n = 0;
    return n;
}

extern "C" int hotr_load(void **slot, int version, int reloading) {
    if (*slot == nullptr) *slot = new Tally();
    tally = static_cast<Tally *>(*slot);
    std::printf("version %d %s, %zu words so far\n", version, reloading ? "reloaded" : "loaded",
                tally->counts.size());
    std::fflush(stdout);
    return 0;
}

extern "C" int hotr_unload(void **slot, int version, int reloading) {
    (void)version;
    if (!reloading) {  // the final unload: nothing comes after
        delete static_cast<Tally *>(*slot);
        *slot = nullptr;
    }
    return 0;
}

extern "C" void add(const char *word) { tally->counts[word] += 1; }

extern "C" void report(void) {
    std::printf("report %d:", ++reports());
    for (const auto &[word, count] : tally->counts)
        std::printf(" %s " LABEL " %d", word.c_str(), count);
    std::printf("\n");
    std::fflush(stdout);
}
