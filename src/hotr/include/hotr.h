/* hotr.h: the hooks and markers a hot-reloaded library may use with hotr.
 *
 * Compile with -I"$(hotr --include)"; hotr's own builds add that path themselves.
 *
 * Lifecycle hooks, both optional.  `state` points at one slot that hotr keeps for the library
 * across every version: allocate on the first load, keep using it in later versions, free it on
 * the final unload.  `version` is hotr's version number (1 for the first load); `reloading` is 0
 * for the first load and the final unload (close() or exit), 1 when one version hands over to the
 * next.  On a reload hotr calls the old version's hotr_unload, then the new version's hotr_load.
 * A non-zero return from hotr_load rejects the new version: hotr unloads it, calls the previous
 * version's hotr_load again (reloading = 1) and reports the error; the previous version stays.
 * The plain `void cleanup(void)` of the seed is still called right before a version is unmapped.
 */
#ifndef HOTR_H
#define HOTR_H

#ifdef __cplusplus
extern "C" {
#endif

__attribute__((visibility("default"))) int hotr_load(void **state, int version, int reloading);
__attribute__((visibility("default"))) int hotr_unload(void **state, int version, int reloading);

#ifdef __cplusplus
}
#endif

/* With HotReloader(..., keep_globals=True), global and static variables that exist in the old
 * and the new version with the same name and size are copied over before hotr_load.  Mark a
 * variable HOTR_RESET to start it fresh in every version (and mark anything holding a pointer
 * into the library itself: such a pointer would point into the old, unloaded version). */
#define HOTR_RESET __attribute__((section("hotr_reset")))

#endif
