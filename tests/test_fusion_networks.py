"""The networks: the student's 113 parameters and released key names, strict loading, odd sizes."""
import torch

from mmdrfuse.fusion.networks import Student, Teacher, count_parameters, load_model


def test_student_has_113_parameters_and_released_keys():
    student = Student()
    assert count_parameters(student) == 113
    assert sorted(student.state_dict()) == ["conv1.1.bias", "conv1.1.weight", "conv2.1.bias", "conv2.1.weight"]


def test_released_weights_load_strictly(official_weights):
    assert count_parameters(load_model("student", official_weights["student"])) == 113
    teacher = load_model("teacher", official_weights["teacher"])
    out, feature = teacher(torch.rand(1, 2, 31, 17))  # odd sizes: padded and cropped back
    assert out.shape == (1, 1, 31, 17) and feature.shape == (1, 4, 31, 17)


def test_teacher_odd_size_matches_even_interior():
    torch.manual_seed(0)
    teacher = Teacher().eval()
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        full = teacher(x)[0]
        odd = teacher(x[..., :31, :31])[0]
    assert odd.shape[-2:] == (31, 31)
    # reflect-padding the odd image changes only the border region
    assert torch.allclose(full[..., :20, :20], odd[..., :20, :20], atol=1e-2)
