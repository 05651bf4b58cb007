/* Calls the no_std staticlib from C. Usage: main N p_0 .. p_{N-1} t_0 .. t_{N-1}
 * (logits, then targets). Prints the GHM-C loss with enough digits to round-trip an f32. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

float nostd_ghmc_loss(const float *pred, const float *target, size_t n);

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s N preds... targets...\n", argv[0]);
        return 2;
    }
    size_t n = strtoul(argv[1], NULL, 10);
    if ((size_t)argc != 2 + 2 * n) {
        fprintf(stderr, "expected %zu numbers, got %d\n", 2 * n, argc - 2);
        return 2;
    }
    float *v = malloc((2 * n + 1) * sizeof(float));
    if (!v) return 2;
    for (size_t i = 0; i < 2 * n; i++) v[i] = strtof(argv[2 + i], NULL);
    printf("%.9g\n", (double)nostd_ghmc_loss(v, v + n, n));
    free(v);
    return 0;
}
