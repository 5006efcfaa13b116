// particles.c: a global array carried into each new version with keep_globals=True.
// Run `.venv/bin/python examples/particles.py`, change GRAVITY and save: the particles keep their
// positions and speeds, only the physics changes.  `frame` is HOTR_RESET: it restarts at 0.
#include <hotr.h>

#define N 4
#define GRAVITY -9.8

double position[N] = {100, 80, 60, 40};
double speed[N];
HOTR_RESET int frame;

void simulate(double dt) {
    for (int i = 0; i < N; i++) {
        speed[i] += GRAVITY * dt;
        position[i] += speed[i] * dt;
        if (position[i] < 0) {  // bounce
            position[i] = -position[i];
            speed[i] = -speed[i] * 0.9;
        }
    }
    frame++;
}

double height(int i) { return position[i]; }
int frames(void) { return frame; }
