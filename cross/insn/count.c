/*
 * Guest instructions executed per translation block, for qemu-user (plugin API version 1, the
 * one QEMU 7.2 in Debian 12 implements). Loaded with
 *
 *     qemu-aarch64 -plugin cross/insn/libcount.so,out=FILE ... ./tipedge ...
 *
 * it writes one line per translated block at exit: its guest address, its instruction count and
 * the instructions it executed (count x runs). cross/insn/attribute.py maps the addresses to the
 * binary's symbols. Single-threaded guests only (the counters are plain adds); tipedge's encoder
 * benchmark runs one thread.
 *
 * The handful of declarations below are the plugin ABI QEMU exports to plugins (written here
 * rather than taken from QEMU's header, which Debian does not package).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct block {
    uint64_t vaddr;
    uint64_t n_insns;
    uint64_t executed; /* instructions: n_insns added at every execution */
};

enum { CHUNK = 65536 };
struct chunk {
    struct chunk *next;
    size_t used;
    struct block blocks[CHUNK];
};

static struct chunk *chunks;
static char out_path[4096] = "insn-counts.txt";

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    if (!chunks || chunks->used == CHUNK) {
        struct chunk *c = calloc(1, sizeof *c);
        if (!c) {
            fprintf(stderr, "insn count plugin: out of memory\n");
            abort();
        }
        c->next = chunks;
        chunks = c;
    }
    struct block *b = &chunks->blocks[chunks->used++];
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n_insns = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->executed,
                                             b->n_insns);
}

static void on_exit_(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = fopen(out_path, "w");
    if (!f) {
        perror(out_path);
        return;
    }
    for (struct chunk *c = chunks; c; c = c->next)
        for (size_t i = 0; i < c->used; i++)
            if (c->blocks[i].executed)
                fprintf(f, "%llx %llu %llu\n", (unsigned long long)c->blocks[i].vaddr,
                        (unsigned long long)c->blocks[i].n_insns,
                        (unsigned long long)c->blocks[i].executed);
    fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const void *info, int argc,
                                                               char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
        } else {
            fprintf(stderr, "insn count plugin: unknown argument %s (expected out=FILE)\n",
                    argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit_, NULL);
    return 0;
}
