"""Builds fovea-tiny's training data: emoji scenes at 128x128 with English and Chinese captions.

Stages (all by default; each can be run alone with --stage):

  fetch    `npm pack` @twemoji/svg (graphics CC-BY 4.0) and emojibase-data (names and
           tags, MIT) at pinned versions into <cache>/npm, and extracts the SVGs of the
           chosen emoji and the en/zh name tables into <cache>/src.
  sprites  renders every chosen emoji with resvg (the `resvg-py` wheel: no system
           libraries) at each sprite size into <cache>/sprites.npz, and writes the object
           table <cache>/objects.json (also copied to models/training/objects.json).
  compose  draws the scenes: a background (plain colour, sky gradient, stripes,
           checkerboard, grid lines, busy texture), one to three emoji at named sizes
           and positions on a 3x3 grid, captions in English and Chinese generated from
           the scene. Writes <cache>/data/shard_XXXX.npy (uint8, N x 128 x 128 x 3),
           <cache>/data/labels.jsonl (one line per image: objects, background, captions)
           and <cache>/data/meta.json; and models/training/heldout.json, the
           (object, background, position) combinations never drawn, with prompts.

`compose` needs only numpy and the sprite atlas, so it can run on a machine without
npm or network (carry <cache>/sprites.npz and <cache>/objects.json there).

Every image is drawn from its own generator seeded by (seed, image index), so the data
does not depend on shard size or on the number of worker processes.

    python build_dataset.py --cache ~/.cache/fovea-data --num 65536 --seed 0
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE = 128
TWEMOJI = "@twemoji/svg@15.0.0"
EMOJIBASE = "emojibase-data@17.0.0"

# ---------------------------------------------------------------------------------------
# The objects. hexcode | English name | Chinese name | Chinese measure word.
# An empty name takes emojibase's label for that language; names are overridden where the
# label is not a plain noun phrase ("dog face" -> "dog", "猪头" -> "猪").
# ---------------------------------------------------------------------------------------
OBJECTS = """
1F34E|||个
1F34F|||个
1F350|||个
1F34A|||个
1F34B|||个
1F34C|||根
1F349|||个
1F347|||串
1F353|||颗
1F352|||对
1F351||桃子|个
1F34D|||个
1F95D|kiwi|猕猴桃|个
1F345|||个
1F346|||根
1F951||牛油果|个
1F966|||棵
1F955|||根
1F33D|corn||根
1F336|||根
1F344|||个
1F35E|||个
1F950|||个
1F9C0|cheese|奶酪|块
1F354|||个
1F355|pizza slice|披萨|块
1F35F|||份
1F369|||个
1F36A|||块
1F382|||个
1F366|ice cream|冰淇淋|个
1F36D|||根
1F36B|chocolate bar|巧克力|块
1F95A||鸡蛋|个
1F363|||个
2615|coffee|咖啡|杯
1F436|dog|狗|只
1F431|cat|猫|只
1F42D|mouse|老鼠|只
1F430|rabbit|兔子|只
1F98A|||只
1F43B|||只
1F43C|||只
1F428|||只
1F42F|tiger|老虎|只
1F981|||只
1F42E|cow|奶牛|头
1F437|pig|小猪|头
1F438|||只
1F435|monkey|猴子|只
1F414|||只
1F427|||只
1F426|||只
1F424|||只
1F986|||只
1F989|||只
1F434|horse|马|匹
1F984|||只
1F41D|bee|蜜蜂|只
1F98B|||只
1F40C|||只
1F41E|ladybug||只
1F422||乌龟|只
1F40D|||条
1F419|||只
1F980||螃蟹|只
1F420|||条
1F41F|||条
1F42C|||条
1F433|whale|鲸鱼|头
1F988|||条
1F40A|||条
1F992|||只
1F418|||头
1F993|||匹
1F42A|||头
1F994|||只
1F99C|||只
1F9A9|||只
1F411|sheep|绵羊|只
1F996|dinosaur|恐龙|只
1F409|||条
1F43A|||只
1F987|||只
1F697|car|汽车|辆
1F695|||辆
1F68C|||辆
1F693|||辆
1F691|||辆
1F692|||辆
1F69A|truck|卡车|辆
1F69C|||辆
1F3CE|||辆
1F3CD|||辆
1F6B2|||辆
1F682|steam locomotive|火车头|个
1F680|||枚
2708|||架
1F681|||架
26F5|||艘
1F6A2|||艘
1F6F8|||个
1F6A6|traffic light|红绿灯|个
26BD|||个
1F3C0|||个
1F3C8|rugby ball|橄榄球|个
26BE|||个
1F3BE|tennis ball||个
1F3B1|pool ball||个
1F388|||个
1F381|gift box|礼物|个
1F380|bow||个
1FA81|||只
1F3B8|||把
1F3B9|piano keyboard|电子琴|台
1F941|||面
1F3BA|||把
1F3BB|||把
1F514|||个
1F4DA|books|书|摞
270F|||支
1F4CE|||个
2702|||把
1F511|||把
1F512|padlock|锁|把
1F528|||把
1F527|||把
1F4A1|||个
1F56F|||根
23F0|||个
231B|hourglass||个
1F4F7|||台
1F4F1|||部
1F4BB|||台
1F4FA|||台
260E|||部
1F3A7|headphones||副
1F392|||个
1F451|||顶
1F3A9|||顶
1F453|||副
1F45F|sneaker|运动鞋|只
1F455|t-shirt|t恤|件
1F457|||件
1F9E6|||双
2602|||把
1F48E|||颗
1F3C6|||个
1F947|gold medal||枚
1F9F8|||只
1F3B2|dice||个
1F9E9|||块
1FA91|||把
1F9F2|||块
2693|||个
1F3E0|||座
1F3F0|castle|城堡|座
26FA|||顶
1F383|||个
1F384|||棵
26C4|snowman||个
1F335|||棵
1F332|pine tree||棵
1F334|||棵
1F333|tree|树|棵
1F33B|||朵
1F339|||朵
1F337|||朵
1F338|||朵
1F340|||片
1F341|||片
2600|||个
1F319|||个
2B50|||颗
2601|||朵
26A1|lightning bolt|闪电|道
1F525|fire|火焰|团
1F4A7|water drop||滴
2744|||片
1F308|||道
2764|red heart|红心|颗
1F600|grinning face|咧嘴笑的脸|张
1F602|laughing face with tears|笑哭的脸|张
1F60D|face with heart eyes|爱心眼的笑脸|张
1F60E|face with sunglasses|戴墨镜的笑脸|张
1F622|crying face|哭脸|张
1F621|angry face|生气的脸|张
1F631|screaming face|尖叫的脸|张
1F634|sleeping face|睡着的脸|张
1F914|thinking face|思考的脸|张
1F916|||个
1F47B||幽灵|个
1F480|||个
1F47D|||个
1F921|clown face|小丑脸|张
"""

# Sprite side lengths in pixels per size class (one is drawn at random per object).
SIZES = {"small": (24, 26, 28, 30), "medium": (34, 36, 38, 40), "large": (50, 52, 54, 56, 58, 60)}
SIZE_EN = {"small": "small", "medium": "medium-sized", "large": "large"}
SIZE_ZH = {"small": "小", "medium": "中等大小的", "large": "大"}

# 3x3 grid, row-major; centres at 0.2 / 0.5 / 0.8 of the image side.
POSITIONS = ["top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right"]
POS_EN = ["at the top left", "at the top", "at the top right", "on the left", "in the center",
          "on the right", "at the bottom left", "at the bottom", "at the bottom right"]
POS_ZH = ["左上角", "上方", "右上角", "左侧", "中间", "右侧", "左下角", "下方", "右下角"]
GRID = (0.2, 0.5, 0.8)

# Named colours: English, Chinese (with 色, and the one-character form used in "蓝白相间").
COLORS = {
    "red": ((214, 40, 40), "红色", "红"),
    "orange": ((245, 135, 30), "橙色", "橙"),
    "yellow": ((245, 210, 40), "黄色", "黄"),
    "green": ((50, 165, 70), "绿色", "绿"),
    "blue": ((40, 90, 215), "蓝色", "蓝"),
    "purple": ((135, 60, 185), "紫色", "紫"),
    "pink": ((245, 140, 185), "粉色", "粉"),
    "brown": ((125, 78, 40), "棕色", "棕"),
    "black": ((22, 22, 26), "黑色", "黑"),
    "white": ((244, 244, 240), "白色", "白"),
    "gray": ((128, 128, 128), "灰色", "灰"),
}
COLOR_NAMES = list(COLORS)

BACKGROUNDS = ["plain", "sky", "stripes", "checkerboard", "grid", "busy"]
# Sampling weights of the background types (busy and sky are harder, so a bit more).
BG_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.2])

DETAIL_EN = ["highly detailed", "sharp texture", "intricate", "4k", "sharp focus", "high quality"]
DETAIL_ZH = ["高清", "细节丰富", "纹理清晰", "4k", "高画质", "精细"]

HELDOUT_COUNT = 64
CAPTIONS_PER_LANG = 2


# ---------------------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------------------
def parse_objects():
    rows = []
    for line in OBJECTS.strip().splitlines():
        hexcode, en, zh, mw = line.split("|")
        rows.append((hexcode, en, zh, mw))
    assert len({r[0] for r in rows}) == len(rows), "duplicate hexcode"
    return rows


def npm_pack(spec, dest):
    """`npm pack SPEC` into DEST (skipped when the tarball is already there)."""
    os.makedirs(dest, exist_ok=True)
    name = spec.rsplit("@", 1)[0].lstrip("@").replace("/", "-") + "-" + spec.rsplit("@", 1)[1] + ".tgz"
    path = os.path.join(dest, name)
    if not os.path.exists(path):
        subprocess.run(["npm", "pack", spec, "--silent"], cwd=dest, check=True, stdout=subprocess.DEVNULL)
    return path


def stage_fetch(cache):
    npm_dir = os.path.join(cache, "npm")
    src = os.path.join(cache, "src")
    os.makedirs(os.path.join(src, "svg"), exist_ok=True)
    tw = npm_pack(TWEMOJI, npm_dir)
    eb = npm_pack(EMOJIBASE, npm_dir)
    wanted = {h.lower() + ".svg" for h, *_ in parse_objects()}
    with tarfile.open(tw) as t:
        for m in t.getmembers():
            base = os.path.basename(m.name)
            if base in wanted:
                with open(os.path.join(src, "svg", base), "wb") as f:
                    f.write(t.extractfile(m).read())
    with tarfile.open(eb) as t:
        for lang in ("en", "zh"):
            data = t.extractfile(f"package/{lang}/data.json").read()
            with open(os.path.join(src, f"emojibase_{lang}.json"), "wb") as f:
                f.write(data)
    missing = [w for w in wanted if not os.path.exists(os.path.join(src, "svg", w))]
    if missing:
        sys.exit(f"twemoji has no SVG for {missing}")
    print(f"fetch: {len(wanted)} SVGs and emojibase en/zh in {src}")


# ---------------------------------------------------------------------------------------
# sprites
# ---------------------------------------------------------------------------------------
def stage_sprites(cache):
    import resvg_py
    from PIL import Image

    src = os.path.join(cache, "src")
    eb = {}
    for lang in ("en", "zh"):
        with open(os.path.join(src, f"emojibase_{lang}.json"), encoding="utf-8") as f:
            eb[lang] = {e["hexcode"]: e for e in json.load(f)}
    objects, arrays = [], {}
    all_sizes = sorted({s for v in SIZES.values() for s in v})
    for i, (hexcode, en, zh, mw) in enumerate(parse_objects()):
        e_en, e_zh = eb["en"][hexcode], eb["zh"][hexcode]
        svg_path = os.path.join(src, "svg", hexcode.lower() + ".svg")
        for s in all_sizes:
            png = resvg_py.svg_to_bytes(svg_path=svg_path, width=s, height=s)
            rgba = np.asarray(Image.open(io.BytesIO(bytes(png))).convert("RGBA"))
            assert rgba.shape == (s, s, 4), (hexcode, rgba.shape)
            arrays[f"{i}_{s}"] = rgba
        # Mean colour of the opaque pixels at the largest size (for reference/eval).
        big = arrays[f"{i}_{all_sizes[-1]}"].astype(np.float64)
        a = big[..., 3:] / 255.0
        mean_rgb = (big[..., :3] * a).sum((0, 1)) / max(a.sum(), 1e-6)
        objects.append({
            "id": i,
            "hexcode": hexcode,
            "emoji": e_en["emoji"],
            "en": en or e_en["label"],
            "zh": zh or e_zh["label"],
            "measure_zh": mw,
            "emojibase_en": e_en["label"],
            "emojibase_zh": e_zh["label"],
            "tags_en": e_en.get("tags", []),
            "tags_zh": e_zh.get("tags", []),
            "mean_rgb": [round(float(c), 1) for c in mean_rgb],
        })
    np.savez_compressed(os.path.join(cache, "sprites.npz"), **arrays)
    table = {"source": {"twemoji": TWEMOJI + " (graphics CC-BY 4.0, Twitter Inc. and contributors)",
                        "emojibase": EMOJIBASE + " (MIT; names from Unicode CLDR)"},
             "sizes": SIZES, "objects": objects}
    for path in (os.path.join(cache, "objects.json"), os.path.join(HERE, "objects.json")):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(table, f, ensure_ascii=False, indent=1)
    print(f"sprites: {len(objects)} objects x {len(all_sizes)} sizes -> {cache}/sprites.npz")


# ---------------------------------------------------------------------------------------
# backgrounds (numpy only)
# ---------------------------------------------------------------------------------------
def jitter_color(rng, rgb, amount=18):
    return np.clip(np.array(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def resize_bilinear(a, size):
    """Bilinear resize of an (h, w, c) float array to (size, size, c), corners aligned."""
    h, w = a.shape[:2]
    ys, xs = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    y0 = np.floor(ys).astype(int).clip(0, h - 1)
    x0 = np.floor(xs).astype(int).clip(0, w - 1)
    y1, x1 = (y0 + 1).clip(0, h - 1), (x0 + 1).clip(0, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def two_colors(rng):
    """Two different named colours; the second is white more often than not."""
    c1 = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    if c1 != "white" and rng.random() < 0.55:
        return c1, "white"
    c2 = c1
    while c2 == c1:
        c2 = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    return c1, c2


def make_background(rng, kind):
    """Returns (float32 image HxWx3 in 0..255, label dict)."""
    n = IMAGE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    if kind == "plain":
        c = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
        img = np.broadcast_to(jitter_color(rng, COLORS[c][0]), (n, n, 3)).copy()
        return img, {"type": kind, "colors": [c]}
    if kind == "sky":
        sub = ["day", "day", "sunset", "night"][rng.integers(4)]
        stops = {
            "day": [(45, 110, 215), (110, 170, 240), (200, 228, 250)],
            "sunset": [(70, 50, 130), (235, 110, 90), (250, 200, 110)],
            "night": [(6, 8, 30), (20, 24, 70), (45, 35, 100)],
        }[sub]
        stops = [jitter_color(rng, s, 12) for s in stops]
        t = (yy / (n - 1))[..., None] * 2.0  # 0..2 over the three stops
        img = np.where(t < 1, stops[0] * (1 - t) + stops[1] * t,
                       stops[1] * (2 - t) + stops[2] * (t - 1))
        if sub == "night":  # a few stars
            for _ in range(rng.integers(15, 40)):
                y, x = rng.integers(0, n, 2)
                img[y, x] = 230 + rng.uniform(0, 25)
        return img.astype(np.float32), {"type": kind, "sky": sub, "colors": []}
    if kind == "stripes":
        c1, c2 = two_colors(rng)
        orient = "horizontal" if rng.random() < 0.5 else "vertical"
        period = rng.integers(8, 25)
        coord = yy if orient == "horizontal" else xx
        mask = (((coord + rng.integers(period)) // (period / 2)) % 2 == 0)[..., None]
        img = np.where(mask, jitter_color(rng, COLORS[c1][0]), jitter_color(rng, COLORS[c2][0]))
        return img, {"type": kind, "orientation": orient, "colors": [c1, c2], "period": int(period)}
    if kind == "checkerboard":
        c1, c2 = two_colors(rng)
        s = rng.integers(8, 21)
        oy, ox = rng.integers(s, size=2)
        mask = ((((yy + oy) // s) + ((xx + ox) // s)) % 2 == 0)[..., None]
        img = np.where(mask, jitter_color(rng, COLORS[c1][0]), jitter_color(rng, COLORS[c2][0]))
        return img, {"type": kind, "colors": [c1, c2], "square": int(s)}
    if kind == "grid":
        c = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
        base = "black" if c == "white" or (c != "black" and rng.random() < 0.25) else "white"
        if c == "white":
            base = "black"
        spacing = rng.integers(10, 25)
        thick = rng.integers(1, 3)
        oy, ox = rng.integers(spacing, size=2)
        mask = ((((yy + oy) % spacing) < thick) | (((xx + ox) % spacing) < thick))[..., None]
        img = np.where(mask, jitter_color(rng, COLORS[c][0], 10), jitter_color(rng, COLORS[base][0], 8))
        return img, {"type": kind, "colors": [c], "base": base, "spacing": int(spacing)}
    if kind == "busy":
        sub = "shapes" if rng.random() < 0.5 else "noise"
        if sub == "noise":
            # Multi-octave colour noise: random grids upsampled and summed.
            img = np.zeros((n, n, 3), np.float32)
            for octave, weight in ((4, 1.0), (8, 0.8), (16, 0.6), (32, 0.5), (128, 0.35)):
                img += weight * resize_bilinear(rng.normal(0, 1, (octave, octave, 3)), n)
            img = (img - img.mean((0, 1))) / (img.std((0, 1)) + 1e-6)
            img = np.clip(128 + 55 * img + rng.uniform(-40, 40, 3), 0, 255)
        else:
            img = np.broadcast_to(rng.uniform(0, 255, 3), (n, n, 3)).astype(np.float32).copy()
            for _ in range(rng.integers(35, 70)):
                col = rng.uniform(0, 255, 3)
                cy, cx = rng.uniform(-8, n + 8, 2)
                r = rng.uniform(3, 14)
                if rng.random() < 0.5:
                    m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                else:
                    r2 = rng.uniform(3, 14)
                    m = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r2)
                img[m] = col
        return img.astype(np.float32), {"type": kind, "busy": sub, "colors": []}
    raise ValueError(kind)


def bg_phrase(bg, lang):
    """Noun phrase for the background, e.g. 'a plain blue background' / '纯蓝色背景'."""
    t, cols = bg["type"], bg["colors"]
    if lang == "en":
        if t == "plain":
            return f"a plain {cols[0]} background"
        if t == "sky":
            return {"day": "a blue sky background", "sunset": "a sunset sky background",
                    "night": "a night sky background"}[bg["sky"]]
        if t == "stripes":
            return f"{article(cols[0])} {cols[0]} and {cols[1]} {bg['orientation']} striped background"
        if t == "checkerboard":
            return f"{article(cols[0])} {cols[0]} and {cols[1]} checkerboard background"
        if t == "grid":
            return f"{article(cols[0])} {cols[0]} grid background"
        return {"shapes": "a busy background of random colorful shapes",
                "noise": "a busy colorful noise texture background"}[bg["busy"]]
    if t == "plain":
        return f"纯{COLORS[cols[0]][1]}背景"
    if t == "sky":
        return {"day": "蓝天背景", "sunset": "日落天空背景", "night": "夜空背景"}[bg["sky"]]
    if t == "stripes":
        o = "横" if bg["orientation"] == "horizontal" else "竖"
        return f"{COLORS[cols[0]][2]}{COLORS[cols[1]][2]}相间的{o}条纹背景"
    if t == "checkerboard":
        return f"{COLORS[cols[0]][2]}{COLORS[cols[1]][2]}相间的棋盘格背景"
    if t == "grid":
        return f"{COLORS[cols[0]][1]}网格背景"
    return {"shapes": "杂乱的彩色图形背景", "noise": "杂乱的彩色噪点纹理背景"}[bg["busy"]]


# ---------------------------------------------------------------------------------------
# captions
# ---------------------------------------------------------------------------------------
def article(word):
    return "an" if word[0] in "aeiou" else "a"


def object_phrase(obj, o, lang, show_size):
    if lang == "en":
        words = (SIZE_EN[o["size"]] + " " if show_size else "") + obj["en"]
        return f"{article(words)} {words}"
    return "一" + obj["measure_zh"] + (SIZE_ZH[o["size"]] if show_size else "") + obj["zh"]


def join_en(parts):
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def make_caption(rng, scene, objects, lang):
    """One caption for the scene; attributes are sometimes left out, detail words added."""
    objs, bg = scene["objects"], scene["bg"]
    show_size = rng.random() > 0.1
    show_pos = rng.random() > 0.1
    show_bg = rng.random() > 0.1
    order = rng.permutation(len(objs))
    if lang == "en":
        parts = []
        for k in order:
            o = objs[k]
            p = object_phrase(objects[o["id"]], o, "en", show_size)
            parts.append(p + (" " + POS_EN[o["pos"]] if show_pos else ""))
        subject = join_en(parts)
        if not show_bg:
            text = subject
        elif rng.random() < 0.6:
            text = f"{subject} on {bg_phrase(bg, 'en')}"
        else:
            text = f"{bg_phrase(bg, 'en')} with {subject}"
    else:
        bgp = bg_phrase(bg, "zh")
        phrases = [(POS_ZH[objs[k]["pos"]], object_phrase(objects[objs[k]["id"]], objs[k], "zh", show_size))
                   for k in order]
        if len(objs) == 1 and show_pos and show_bg and rng.random() < 0.6:
            # "纯蓝色背景上左上角的一只小狗"
            text = f"{bgp}上{phrases[0][0]}的{phrases[0][1]}"
        else:
            if show_pos:
                body = "，".join(f"{p}有{o}" for p, o in phrases)
            else:
                body = "、".join(o for _, o in phrases)
            if not show_bg:
                text = body
            elif rng.random() < 0.5:
                text = f"{bgp}上，{body}"
            else:
                text = f"{body}，{bgp}"
    detail = None
    if rng.random() < 0.2:
        pool = DETAIL_EN if lang == "en" else DETAIL_ZH
        k = 1 + int(rng.random() < 0.4)
        words = [pool[j] for j in rng.choice(len(pool), k, replace=False)]
        sep = ", " if lang == "en" else "，"
        detail = words
        text = sep.join(words) + sep + text if rng.random() < 0.3 else text + sep + sep.join(words)
    return text, detail


# ---------------------------------------------------------------------------------------
# compose
# ---------------------------------------------------------------------------------------
def choose_heldout(n_objects, seed):
    """HELDOUT_COUNT distinct (object, background, position) triples, every object at most once."""
    rng = np.random.default_rng([seed, 7777])
    objs = rng.permutation(n_objects)[:HELDOUT_COUNT]
    triples = []
    for k, o in enumerate(objs):
        # Cycle backgrounds so every type is held out equally often.
        triples.append((int(o), BACKGROUNDS[k % len(BACKGROUNDS)], int(rng.integers(9))))
    return triples


def sample_scene(rng, n_objects, heldout_set):
    """Scene description (no pixels) that avoids every held-out triple."""
    bg_kind = BACKGROUNDS[rng.choice(len(BACKGROUNDS), p=BG_WEIGHTS / BG_WEIGHTS.sum())]
    count = 1 + int(rng.choice(3, p=[0.6, 0.28, 0.12]))
    while True:
        ids = rng.choice(n_objects, count, replace=False)
        cells = rng.choice(9, count, replace=False)
        sizes = [["small", "medium", "large"][rng.choice(3, p=[0.35, 0.35, 0.3])] for _ in range(count)]
        if any((int(i), bg_kind, int(c)) in heldout_set for i, c in zip(ids, cells)):
            continue
        # A large object needs its neighbouring cells free so objects do not pile up.
        ok = True
        for a in range(count):
            for b in range(count):
                if a == b or "large" not in (sizes[a], sizes[b]):
                    continue
                ra, ca = divmod(int(cells[a]), 3)
                rb, cb = divmod(int(cells[b]), 3)
                if max(abs(ra - rb), abs(ca - cb)) < 2:
                    ok = False
        if ok:
            break
    objs = [{"id": int(i), "pos": int(c), "size": s} for i, c, s in zip(ids, cells, sizes)]
    return bg_kind, objs


def render_scene(rng, sprites, n_objects, heldout_set):
    bg_kind, objs = sample_scene(rng, n_objects, heldout_set)
    img, bg = make_background(rng, bg_kind)
    for o in objs:
        side = int(rng.choice(SIZES[o["size"]]))
        rgba = sprites[f"{o['id']}_{side}"].astype(np.float32)
        row, col = divmod(o["pos"], 3)
        cy = GRID[row] * IMAGE + rng.uniform(-4, 4)
        cx = GRID[col] * IMAGE + rng.uniform(-4, 4)
        # Keep the sprite inside the image (large sprites at the corners move inwards).
        y0 = int(round(min(max(cy - side / 2, 1), IMAGE - 1 - side)))
        x0 = int(round(min(max(cx - side / 2, 1), IMAGE - 1 - side)))
        a = rgba[..., 3:] / 255.0
        region = img[y0:y0 + side, x0:x0 + side]
        img[y0:y0 + side, x0:x0 + side] = region * (1 - a) + rgba[..., :3] * a
        o["box"] = [x0, y0, side, side]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), {"objects": objs, "bg": bg}


def load_sprites(cache):
    with np.load(os.path.join(cache, "sprites.npz")) as z:
        return {k: z[k] for k in z.files}


def compose_range(args):
    """Worker: renders images [start, stop) and returns (pixels, label lines)."""
    cache, seed, start, stop, heldout = args
    sprites = load_sprites(cache)
    with open(os.path.join(cache, "objects.json"), encoding="utf-8") as f:
        objects = json.load(f)["objects"]
    heldout_set = {tuple(t) for t in heldout}
    pixels = np.empty((stop - start, IMAGE, IMAGE, 3), np.uint8)
    lines = []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        img, scene = render_scene(rng, sprites, len(objects), heldout_set)
        pixels[i - start] = img
        caps = {lang: [make_caption(rng, scene, objects, lang) for _ in range(CAPTIONS_PER_LANG)]
                for lang in ("en", "zh")}
        lines.append(json.dumps({
            "i": i, "objects": scene["objects"], "bg": scene["bg"],
            "en": [c for c, _ in caps["en"]], "zh": [c for c, _ in caps["zh"]],
            "detail": [d for lang in ("en", "zh") for _, d in caps[lang]],
        }, ensure_ascii=False))
    return pixels, lines


def heldout_prompts(triples, objects, seed):
    """For each held-out triple a full scene spec and its English and Chinese prompt."""
    rng = np.random.default_rng([seed, 8888])
    out = []
    for oid, kind, pos in triples:
        _, bg = make_background(rng, kind)
        size = ["medium", "large"][rng.integers(2)]
        scene = {"objects": [{"id": oid, "pos": pos, "size": size}], "bg": bg}
        obj = objects[oid]
        en = f"{object_phrase(obj, scene['objects'][0], 'en', True)} {POS_EN[pos]} on {bg_phrase(bg, 'en')}"
        zh = f"{bg_phrase(bg, 'zh')}上{POS_ZH[pos]}的{object_phrase(obj, scene['objects'][0], 'zh', True)}"
        out.append({"object": oid, "object_en": obj["en"], "object_zh": obj["zh"],
                    "background": kind, "position": POSITIONS[pos], "size": size,
                    "bg": bg, "prompt_en": en, "prompt_zh": zh})
    return out


def stage_compose(cache, num, seed, shard_size, workers):
    with open(os.path.join(cache, "objects.json"), encoding="utf-8") as f:
        objects = json.load(f)["objects"]
    triples = choose_heldout(len(objects), seed)
    out = os.path.join(cache, "data")
    os.makedirs(out, exist_ok=True)
    jobs = [(cache, seed, s, min(s + shard_size, num), triples) for s in range(0, num, shard_size)]
    t0 = time.time()
    label_path = os.path.join(out, "labels.jsonl")
    with open(label_path + ".tmp", "w", encoding="utf-8") as labels:
        if workers > 1:
            import multiprocessing as mp
            with mp.Pool(workers) as pool:
                results = pool.imap(compose_range, jobs)
                for k, (pixels, lines) in enumerate(results):
                    np.save(os.path.join(out, f"shard_{k:04d}.npy"), pixels)
                    labels.write("\n".join(lines) + "\n")
                    print(f"  shard {k + 1}/{len(jobs)} ({time.time() - t0:.0f}s)", flush=True)
        else:
            for k, job in enumerate(jobs):
                pixels, lines = compose_range(job)
                np.save(os.path.join(out, f"shard_{k:04d}.npy"), pixels)
                labels.write("\n".join(lines) + "\n")
                print(f"  shard {k + 1}/{len(jobs)} ({time.time() - t0:.0f}s)", flush=True)
    os.replace(label_path + ".tmp", label_path)
    meta = {"num": num, "seed": seed, "shard_size": shard_size, "image": IMAGE,
            "shards": len(jobs), "twemoji": TWEMOJI, "emojibase": EMOJIBASE,
            "backgrounds": BACKGROUNDS, "positions": POSITIONS, "sizes": list(SIZES)}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    held = {"about": "(object, background type, position) combinations never drawn in training "
                     "(build_dataset.py --seed %d); one English and one Chinese prompt each" % seed,
            "seed": seed, "items": heldout_prompts(triples, objects, seed)}
    with open(os.path.join(HERE, "heldout.json"), "w", encoding="utf-8") as f:
        json.dump(held, f, ensure_ascii=False, indent=1)
    print(f"compose: {num} images in {len(jobs)} shards, {time.time() - t0:.0f}s -> {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/fovea-data"))
    ap.add_argument("--stage", choices=["all", "fetch", "sprites", "compose"], default="all")
    ap.add_argument("--num", type=int, default=65536, help="images to compose")
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--preview", type=int, default=0, help="also write a PNG grid of the first N images")
    a = ap.parse_args()
    os.makedirs(a.cache, exist_ok=True)
    if a.stage in ("all", "fetch"):
        stage_fetch(a.cache)
    if a.stage in ("all", "sprites"):
        stage_sprites(a.cache)
    if a.stage in ("all", "compose"):
        stage_compose(a.cache, a.num, a.seed, a.shard_size, a.workers)
    if a.preview:
        from PIL import Image
        x = np.load(os.path.join(a.cache, "data", "shard_0000.npy"), mmap_mode="r")[: a.preview]
        cols = 8
        rows = (len(x) + cols - 1) // cols
        grid = np.zeros((rows * IMAGE, cols * IMAGE, 3), np.uint8)
        for k, im in enumerate(x):
            r, c = divmod(k, cols)
            grid[r * IMAGE:(r + 1) * IMAGE, c * IMAGE:(c + 1) * IMAGE] = im
        path = os.path.join(a.cache, "preview.png")
        Image.fromarray(grid).save(path)
        print("preview:", path)


if __name__ == "__main__":
    main()
