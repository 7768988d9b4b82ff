add	x9, x14, x8
add	x10, x13, x8
ldur	q17, [x9, #-16]
add	x9, x12, x8
ldur	q18, [x10, #-16]
ldur	q19, [x9, #-16]
add	x9, x11, x8
add	x10, x24, x8
ldur	q20, [x9, #-16]
add	x9, x22, x8
add	x8, x8, #16
cmp	x8, x21
ldur	q21, [x10, #-16]
sdot	v7.4s, v17.16b, v27.16b
sdot	v6.4s, v18.16b, v27.16b
ldur	q22, [x9, #-16]
sdot	v4.4s, v19.16b, v27.16b
sdot	v3.4s, v20.16b, v27.16b
sdot	v16.4s, v17.16b, v21.16b
sdot	v5.4s, v17.16b, v22.16b
sdot	v2.4s, v18.16b, v21.16b
sdot	v25.4s, v18.16b, v22.16b
sdot	v1.4s, v19.16b, v21.16b
sdot	v24.4s, v19.16b, v22.16b
sdot	v0.4s, v20.16b, v21.16b
sdot	v23.4s, v20.16b, v22.16b
b.ls	.LBB190_96
