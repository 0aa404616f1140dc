"""CelebA's 40 attribute names, its image size and the label naming rule: the one place they are written down."""

# The column order of CelebA's list_attr_celeba.txt / .csv.
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)

# CelebA's aligned-and-cropped images are all this size: (height, width).
CELEBA_SIZE = (218, 178)


def class_names(attribute: str) -> tuple[str, str]:
    """Names of class 0 and class 1 for a binary attribute (`Male` -> Female, Male)."""
    if attribute == "Male":
        return ("Female", "Male")
    return (f"not_{attribute}", attribute)
