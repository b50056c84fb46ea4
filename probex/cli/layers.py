"""``probex layers``: the layers of a zoo, with the paper's layer number beside each name in Model-J zoos."""

from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "layers",
        help="list a zoo's layers (with the paper's layer numbers in Model-J zoos)",
        description="List the layers of every architecture in a zoo: name, matrix shape and kind. In "
                    "Model-J zoos the first column is the paper's layer number (the index the paper and "
                    "the official code use: ViT 59, ResNet 59 and 67, SD 46); wherever probex asks for a "
                    "layer (`probex zoo bank`, `probex sweep --layer`, `probex download --layers`) that "
                    "number works as well as the name.",
    )
    parser.add_argument("path", nargs="?", help="the zoo's root folder (default: the shipped demo jungle)")
    parser.add_argument("--tree", help="only the models of this tree")
    parser.add_argument("--paper", action="store_true", help="only the layers that have a paper number, in its order")
    parser.add_argument("--conv-layout", choices=("out-first", "modelj"),
                        help="how conv kernels become matrices (default: 'modelj' for Model-J ResNet, "
                             "as the official loader, else 'out-first')")
    parser.set_defaults(func=run_layers)


def run_layers(args: argparse.Namespace) -> int:
    from probex.cli import open_zoo
    from probex.zoo.modelj_layers import paper_layer_numbers

    zoo = open_zoo(args.path)
    if args.tree is not None:
        zoo = zoo.select(tree=args.tree)
    if not len(zoo):
        print(f"{zoo.name}: no readable model")
        return 0
    for name, group in zoo.architectures().items():
        record = group.records[0]
        catalog = group.catalog(record, conv_layout=args.conv_layout)
        numbers = paper_layer_numbers(record.read_header())
        if args.paper:
            catalog = sorted((info for info in catalog if info.name in numbers), key=lambda info: numbers[info.name])
        trees = ", ".join(group.trees[:4]) + (", ..." if len(group.trees) > 4 else "")
        note = "; first column: the paper's layer number" if numbers else ""
        print(f"{name}: {len(group)} models (trees {trees or 'none'}), {len(catalog)} layers{note}")
        if not catalog:
            continue
        width = max(len(info.name) for info in catalog)
        for info in catalog:
            number = str(numbers[info.name]) if info.name in numbers else "-"
            shape = f"{info.shape[0]} x {info.shape[1]}"
            line = f"  {number:>5}  {info.name:<{width}}  {shape:>13}  {info.kind}" if numbers else \
                f"  {info.name:<{width}}  {shape:>13}  {info.kind}"
            print(line)
    return 0
