// example.c: the library that main.py hot-reloads (the seed's example, unchanged).
// Edit it while main.py runs, then rebuild:  cc -shared -fPIC example.c -o libhot.so
#include <stdio.h>

void cleanup(void) {
    printf("cleanup\n");
    fflush(stdout);
}

void hello_world_func(void) {
    printf("hello world!\n");
    fflush(stdout);
}
