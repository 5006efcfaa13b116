// example.c: the seed's example library, hot-reloaded by `hotr run` (the demo) and examples/main.py.
// Edit it while either runs: `hotr run` rebuilds on save; with main.py, rebuild it yourself
// (cc -shared -fPIC example.c -o libhot.so).
#include <stdio.h>

void cleanup(void) {
    printf("cleanup\n");
    fflush(stdout);
}

void hello_world_func(void) {
    printf("hello world!\n");
    fflush(stdout);
}
