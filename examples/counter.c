// counter.c: a count that survives every reload, kept in hotr's state slot (see hotr.h).
// Run `.venv/bin/python examples/counter.py`, then change STEP below and save: the count goes on.
#include <hotr.h>
#include <stdio.h>
#include <stdlib.h>

#define STEP 1

struct state {
    long count;
};

static struct state *s;

int hotr_load(void **slot, int version, int reloading) {
    if (*slot == NULL) {  // the first version allocates; later versions find it in the slot
        *slot = calloc(1, sizeof(struct state));
        if (*slot == NULL) return 1;  // a non-zero return refuses this version
    }
    s = *slot;
    printf("version %d loaded (%s), count is %ld\n", version, reloading ? "reload" : "first",
           s->count);
    fflush(stdout);
    return 0;
}

int hotr_unload(void **slot, int version, int reloading) {
    if (!reloading) {  // the final unload: nothing comes after, free the state
        free(*slot);
        *slot = NULL;
    }
    return 0;
}

long step(void) {
    s->count += STEP;
    return s->count;
}
