mov	x11, x28
mov	x28, x10
ldr	q1, [x8, x11]
ldr	q2, [x27, x11]
ldr	q3, [x24, x11]
ldr	q4, [x15, x11]
add	x10, x9, x11, lsl #1
ldur	x11, [x29, #-184]
sshll	v5.8h, v1.8b, #0
sshll	v6.8h, v2.8b, #0
sshll	v7.8h, v3.8b, #0
sshll	v16.8h, v4.8b, #0
ldp	q17, q18, [x10]
sshll2	v1.8h, v1.16b, #0
sshll2	v2.8h, v2.16b, #0
sshll2	v3.8h, v3.16b, #0
sshll2	v4.8h, v4.16b, #0
add	x10, x28, #16
smlal	v0.4s, v5.4h, v17.4h
smlal	v21.4s, v6.4h, v17.4h
smlal	v20.4s, v7.4h, v17.4h
smlal	v19.4s, v16.4h, v17.4h
cmp	x10, x11
smlal2	v0.4s, v5.8h, v17.8h
smlal2	v21.4s, v6.8h, v17.8h
smlal2	v20.4s, v7.8h, v17.8h
smlal2	v19.4s, v16.8h, v17.8h
smlal	v0.4s, v1.4h, v18.4h
smlal	v21.4s, v2.4h, v18.4h
smlal	v20.4s, v3.4h, v18.4h
smlal	v19.4s, v4.4h, v18.4h
smlal2	v0.4s, v1.8h, v18.8h
smlal2	v21.4s, v2.8h, v18.8h
smlal2	v20.4s, v3.8h, v18.8h
smlal2	v19.4s, v4.8h, v18.8h
b.ls	.LBB184_74
