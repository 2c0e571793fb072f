// SPDX-License-Identifier: GPL-2.0
/* The floor of the mechanism, for bench/overhead: one kretprobe whose return handler does nothing
 * (no entry handler, no counter, no data), on the function `func` (module parameter), with
 * `maxactive` instances, as our module registers them. What a variant adds beyond this is what our
 * handlers (or bpftrace's programs) cost; this is what a kretprobe costs at all.
 * Built in the VM against its headers by bench/overhead (module kpf_floor):
 *     insmod kpf_floor.ko func=vfs_write maxactive=1024
 */
#include <linux/kprobes.h>
#include <linux/module.h>

static char *func = "vfs_write";
module_param(func, charp, 0444);
MODULE_PARM_DESC(func, "the function to put the return probe on");
static int maxactive = 1024;
module_param(maxactive, int, 0444);
MODULE_PARM_DESC(maxactive, "kretprobe maxactive");

static int kpf_floor_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	return 0;
}
NOKPROBE_SYMBOL(kpf_floor_ret);

static struct kretprobe kpf_floor_rp = {
	.handler = kpf_floor_ret,
};

static int __init kpf_floor_init(void)
{
	kpf_floor_rp.kp.symbol_name = func;
	kpf_floor_rp.maxactive = maxactive;
	return register_kretprobe(&kpf_floor_rp);
}

static void __exit kpf_floor_exit(void)
{
	unregister_kretprobe(&kpf_floor_rp);
}

module_init(kpf_floor_init);
module_exit(kpf_floor_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("bench/overhead: a kretprobe with an empty return handler");
