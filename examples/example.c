// example.c: the seed's example library, loaded by examples/main.py.
// Edit it while main.py runs, then rebuild it with the command main.py prints
// (cc -shared -fPIC example.c -o libhot.so); `hotr run` has its own copy (the demo).
#include <stdio.h>

void cleanup(void) {
    printf("cleanup\n");
    fflush(stdout);
}

void hello_world_func(void) {
    printf("hello world!\n");
    fflush(stdout);
}
