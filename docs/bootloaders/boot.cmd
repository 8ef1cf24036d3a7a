# ROTA A/B slot selection for U-Boot (hush shell), with boot counting.
#
# Compile it into the boot.scr U-Boot's distro boot looks for:
#
#   mkimage -A arm64 -O linux -T script -C none -n "ROTA boot" \
#       -d boot.cmd boot.scr
#
# (mkimage is in Debian's u-boot-tools; use -A arm for 32-bit boards.)
#
# Variables, in the U-Boot environment that ROTA's U-Boot backend (package
# slot, type UBoot) and fw_printenv/fw_setenv read and write:
#
#   BOOT_ORDER         bootnames by preference, separated by spaces: "A B"
#   BOOT_<name>_LEFT   boot tries slot <name> has left, 0 to 9: BOOT_A_LEFT=3
#
# ROTA also keeps ROTA_<name>_TRIAL for its own bookkeeping; this script
# never reads it.
#
# At each boot: take the first name in BOOT_ORDER whose _LEFT is above 0,
# decrement its _LEFT, save the environment, and boot it with
# rota.slot=<name> on the kernel command line. The agent resets _LEFT once
# the system proves healthy; a slot that keeps failing runs out of tries
# and the next one in BOOT_ORDER boots. When no slot has tries left, the
# script changes nothing and returns without booting, leaving U-Boot to its
# next boot target or its prompt. The Go function UBoot.SimulateBoot
# applies exactly this logic; keep the two in step.
#
# Tries stay within 0 to 9 because setexpr computes in hexadecimal while
# test compares in decimal; the two agree only on single digits.
#
# U-Boot's hush has no indirect variables, so each bootname needs its own
# branch below; copy a branch to add a slot. Adapt rota_part_<name>, the
# kernel and device tree paths, and the boot command to your board.

setenv rota_part_A 2
setenv rota_part_B 3

setenv rota_slot
for rota_name in ${BOOT_ORDER}; do
	if test -z "${rota_slot}"; then
		if test "${rota_name}" = "A"; then
			if test -n "${BOOT_A_LEFT}" && test ${BOOT_A_LEFT} -gt 0; then
				setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
				setenv rota_slot A
				setenv rota_part ${rota_part_A}
			fi
		fi
		if test "${rota_name}" = "B"; then
			if test -n "${BOOT_B_LEFT}" && test ${BOOT_B_LEFT} -gt 0; then
				setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
				setenv rota_slot B
				setenv rota_part ${rota_part_B}
			fi
		fi
	fi
done

if test -z "${rota_slot}"; then
	echo "rota: no slot in BOOT_ORDER (${BOOT_ORDER}) has tries left"
	exit
fi

# Spend the try before booting, so a hang or crash counts.
saveenv

setenv bootargs "${bootargs} root=/dev/mmcblk0p${rota_part} rootwait ro rota.slot=${rota_slot}"
load ${devtype} ${devnum}:${rota_part} ${kernel_addr_r} /boot/Image
load ${devtype} ${devnum}:${rota_part} ${fdt_addr_r} /boot/${fdtfile}
booti ${kernel_addr_r} - ${fdt_addr_r}
